-- Argo CD health check for trading.gpttrader.io/TradingBot.
--
-- Install it as resource.customizations.health.trading.gpttrader.io_TradingBot in argocd-cm
-- (see README.md next to this file). Argo CD runs it with the live object in the global `obj`
-- and reads the returned table {status = ..., message = ...}. Written for Lua 5.1 (Argo CD's
-- gopher-lua); tests/argocd/test.sh runs it against fixtures with Lua 5.4.
--
-- Decisions, first match wins:
--   Progressing  status not written yet (no status.observedGeneration)
--   Progressing  being deleted (the bot is halted, then its pods are stopped)
--   Degraded     status.mode is Halted: the bot places no orders, whether a guard trip or a
--                human (spec.halted) halted it; a GitOps dashboard must show a bot that does
--                not trade. Checked before anything else the status says, because the mode is
--                live even when the rest of the status describes an older generation.
--   Degraded     condition Degraded=True (invalid spec or missing Secret)
--   Degraded     status.rollout.phase Aborted or RolledBack for the version the spec asks for
--   Suspended    spec.paused (the operator changes no children; guards and status stay live)
--   Progressing  status.observedGeneration differs from metadata.generation
--   Progressing  a rollout runs (CanaryStarting, CanaryRunning, AwaitingPromotion, Promoting,
--                Baking, RollingBack)
--   Progressing  phase Pending
--   Healthy      phase Running, Ready=True (ReduceOnly is Healthy; the message says so)
--   Degraded     phase Degraded
--   Progressing  anything else

local hs = {}

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function text(value, fallback)
  if value == nil or value == "" then
    return fallback
  end
  return tostring(value)
end

local function number(value)
  if type(value) == "number" then
    return string.format("%d", value)
  end
  return tostring(value)
end

local function result(status, message)
  hs.status = status
  hs.message = message
  return hs
end

local ROLLOUT_RUNNING = {
  CanaryStarting = true,
  CanaryRunning = true,
  AwaitingPromotion = true,
  Promoting = true,
  Baking = true,
  RollingBack = true,
}

-- A finished rollout whose version prod does not run: the spec still asks for it.
local REJECTED = {
  Aborted = "aborted",
  RolledBack = "rolled back",
}

local spec = obj.spec or {}
local metadata = obj.metadata or {}
local status = obj.status

if status == nil or status.observedGeneration == nil then
  return result("Progressing", "Waiting for the operator to report on this TradingBot")
end

if metadata.deletionTimestamp ~= nil or status.phase == "Terminating" then
  return result("Progressing", "Being deleted: the bot is halted, then its pods are stopped")
end

if status.mode == "Halted" then
  return result("Degraded", "Halted (no orders): " .. text(status.modeReason, "no reason given"))
end

local degraded = condition(status, "Degraded")
if degraded ~= nil and degraded.status == "True" then
  return result("Degraded", text(degraded.reason, "Degraded") .. ": " .. text(degraded.message, "see conditions"))
end

local rollout = status.rollout
if rollout ~= nil and REJECTED[rollout.phase] ~= nil and rollout.version ~= nil then
  -- Without spec.image the wanted version is the operator's default image, which this check
  -- cannot see: an aborted rollout of a version prod does not run then counts as current.
  local wanted = spec.image
  if (wanted ~= nil and rollout.version == wanted)
    or (wanted == nil and rollout.version ~= status.currentVersion) then
    return result("Degraded", "Rollout of " .. rollout.version .. " " .. REJECTED[rollout.phase] .. " (" ..
      text(rollout.message, "no reason given") .. "); prod runs " .. text(status.currentVersion, "an unknown version"))
  end
end

if spec.paused == true then
  return result("Suspended", "Paused (spec.paused): the operator changes no children; mode " ..
    text(status.mode, "unknown"))
end

if metadata.generation ~= nil and status.observedGeneration ~= metadata.generation then
  return result("Progressing", "Waiting for the operator to observe generation " .. number(metadata.generation) ..
    " (status describes " .. number(status.observedGeneration) .. ")")
end

if rollout ~= nil and ROLLOUT_RUNNING[rollout.phase] then
  return result("Progressing", "Rollout " .. rollout.phase .. ": " .. text(rollout.message, "in progress"))
end

local ready = condition(status, "Ready")
if status.phase == "Pending" then
  local progressing = condition(status, "Progressing")
  if progressing ~= nil and progressing.status == "True" then
    return result("Progressing", "Pending: " .. text(progressing.message, text(progressing.reason, "in progress")))
  end
  return result("Progressing", "Pending: " .. text(ready and ready.message, "waiting for the bot pod"))
end

if status.phase == "Running" and ready ~= nil and ready.status == "True" then
  local message = "Running " .. text(status.currentVersion, "an unknown version") .. ", mode " ..
    text(status.mode, "unknown")
  if status.mode ~= nil and status.mode ~= "Normal" then
    message = message .. ": " .. text(status.modeReason, "no reason given")
  end
  return result("Healthy", message)
end

if status.phase == "Degraded" then
  return result("Degraded", "Degraded: see the TradingBot's conditions")
end

return result("Progressing", "Phase " .. text(status.phase, "unknown") .. ", Ready " ..
  text(ready and ready.status, "unknown"))
