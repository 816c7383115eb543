-- Runs docs/argocd/tradingbot-health.lua the way Argo CD does (the live object in the global
-- `obj`, the returned table read as {status, message}) against one fixture per case, and
-- checks both fields exactly. Usage: lua5.4 tests/argocd/test_health.lua [path/to/health.lua]

local script_path = arg[1] or "docs/argocd/tradingbot-health.lua"
local file = assert(io.open(script_path, "r"))
local source = file:read("a")
file:close()

-- A fresh environment per run, like Argo CD's fresh Lua state per evaluation.
local function health(object)
  local env = setmetatable({ obj = object }, { __index = _G })
  local chunk = assert(load(source, "@" .. script_path, "t", env))
  local result = chunk()
  for name in pairs(env) do
    if name ~= "obj" then
      error("the health script sets the global " .. name)
    end
  end
  return result
end

local function deep_copy(value)
  if type(value) ~= "table" then
    return value
  end
  local copy = {}
  for k, v in pairs(value) do
    copy[k] = deep_copy(v)
  end
  return copy
end

local function deep_equal(a, b)
  if type(a) ~= type(b) then
    return false
  end
  if type(a) ~= "table" then
    return a == b
  end
  for k, v in pairs(a) do
    if not deep_equal(v, b[k]) then
      return false
    end
  end
  for k in pairs(b) do
    if a[k] == nil then
      return false
    end
  end
  return true
end

local function condition(kind, status, reason, message)
  return {
    type = kind,
    status = status,
    reason = reason,
    message = message,
    observedGeneration = 3,
    lastTransitionTime = "2026-11-21T10:00:00Z",
  }
end

-- A healthy prod bot: phase Running, Ready, generation observed, rollout finished.
local function running()
  return {
    apiVersion = "trading.gpttrader.io/v1alpha1",
    kind = "TradingBot",
    metadata = { name = "btc", namespace = "trading", generation = 3 },
    spec = { profile = "prod", image = "perps-bot:v2", reduceOnly = false, halted = false, paused = false },
    status = {
      observedGeneration = 3,
      phase = "Running",
      mode = "Normal",
      modeReason = "no restriction in force",
      currentVersion = "perps-bot:v2",
      tripCount = 0,
      rollout = { phase = "Promoted", version = "perps-bot:v2", previousVersion = "perps-bot:v1",
        healthyCycles = 30, errors = 0, message = "prod runs perps-bot:v2" },
      conditions = {
        condition("Ready", "True", "PodReady", "the bot pod is running and ready"),
        condition("Progressing", "False", "RolloutComplete", "prod runs perps-bot:v2"),
        condition("Degraded", "False", "AsExpected", "the spec is valid"),
        condition("ReduceOnly", "False", "NotInForce", "mode is Normal"),
        condition("Halted", "False", "NotInForce", "mode is Normal"),
        condition("MetricsReachable", "True", "Scraped", "bot metrics are readable"),
      },
    },
  }
end

local function set_condition(bot, kind, status, reason, message)
  for _, c in ipairs(bot.status.conditions) do
    if c.type == kind then
      c.status, c.reason, c.message = status, reason, message
      return
    end
  end
  table.insert(bot.status.conditions, condition(kind, status, reason, message))
end

local cases = {}
local function case(name, build, status, message)
  table.insert(cases, { name = name, build = build, status = status, message = message })
end

case("a new TradingBot without status", function()
  local bot = running()
  bot.status = nil
  return bot
end, "Progressing", "Waiting for the operator to report on this TradingBot")

case("a status without observedGeneration", function()
  local bot = running()
  bot.status = { phase = "Pending" }
  return bot
end, "Progressing", "Waiting for the operator to report on this TradingBot")

case("running, ready, Normal", running, "Healthy", "Running perps-bot:v2, mode Normal")

case("running in ReduceOnly stays Healthy and says why", function()
  local bot = running()
  bot.status.mode = "ReduceOnly"
  bot.status.modeReason = "spec.reduceOnly"
  set_condition(bot, "ReduceOnly", "True", "ManualIntent", "spec.reduceOnly")
  return bot
end, "Healthy", "Running perps-bot:v2, mode ReduceOnly: spec.reduceOnly")

case("halted by hand (spec.halted)", function()
  local bot = running()
  bot.spec.halted = true
  bot.status.mode = "Halted"
  bot.status.modeReason = "spec.halted"
  set_condition(bot, "Halted", "True", "ManualIntent", "spec.halted")
  return bot
end, "Degraded", "Halted (no orders): spec.halted")

case("halted by a guard trip, even while a newer generation is not observed yet", function()
  local bot = running()
  bot.metadata.generation = 4
  bot.status.mode = "Halted"
  bot.status.modeReason = "guard dailyLoss at 1200 (>= 1000) [trip dailyloss-halted-1795219200]"
  bot.status.tripCount = 1
  return bot
end, "Degraded", "Halted (no orders): guard dailyLoss at 1200 (>= 1000) [trip dailyloss-halted-1795219200]")

case("halted without a reason", function()
  local bot = running()
  bot.status.mode = "Halted"
  bot.status.modeReason = nil
  return bot
end, "Degraded", "Halted (no orders): no reason given")

case("an invalid spec", function()
  local bot = running()
  bot.status.phase = "Degraded"
  set_condition(bot, "Ready", "False", "Degraded", "see the Degraded condition")
  set_condition(bot, "Degraded", "True", "InvalidSpec",
    "spec.exchange.derivatives: derivatives cannot be enabled with the spot-only profile spot")
  return bot
end, "Degraded",
  "InvalidSpec: spec.exchange.derivatives: derivatives cannot be enabled with the spot-only profile spot")

case("a missing Secret wins over paused", function()
  local bot = running()
  bot.spec.paused = true
  bot.status.phase = "Paused"
  set_condition(bot, "Degraded", "True", "SecretMissing",
    "spec.exchange.credentialsSecret: Secret \"coinbase-prod\" not found in namespace trading")
  return bot
end, "Degraded",
  "SecretMissing: spec.exchange.credentialsSecret: Secret \"coinbase-prod\" not found in namespace trading")

case("a rollout aborted for the image the spec asks for", function()
  local bot = running()
  bot.spec.image = "perps-bot:v3"
  bot.status.currentVersion = "perps-bot:v2"
  bot.status.rollout = { phase = "Aborted", version = "perps-bot:v3", previousVersion = "perps-bot:v2",
    healthyCycles = 2, errors = 0,
    message = "aborted: guard trip during the canary (dailyLoss Halted at 12 >= 10)" }
  set_condition(bot, "Progressing", "False", "RolloutAborted", bot.status.rollout.message)
  return bot
end, "Degraded",
  "Rollout of perps-bot:v3 aborted (aborted: guard trip during the canary (dailyLoss Halted at 12 >= 10)); "
    .. "prod runs perps-bot:v2")

case("halted by an emergency brake (kubectl tradingbot halt)", function()
  local bot = running()
  bot.status.mode = "Halted"
  bot.status.modeReason = "emergency brake Halted by alice: incident 42"
  bot.status.modeSources = { "Brake" }
  set_condition(bot, "Halted", "True", "EmergencyBrake", bot.status.modeReason)
  return bot
end, "Degraded", "Halted (no orders): emergency brake Halted by alice: incident 42")

case("prod rolled back during its bake, the spec still asking for the new version", function()
  local bot = running()
  bot.spec.image = "perps-bot:v3"
  bot.status.currentVersion = "perps-bot:v2"
  bot.status.rollout = { phase = "RolledBack", version = "perps-bot:v3", previousVersion = "perps-bot:v2",
    rollbackVersion = "perps-bot:v2", healthyCycles = 10, errors = 0,
    message = "rolled back to perps-bot:v2; perps-bot:v3 is not tried again until spec.image names another version (or a retry)" }
  return bot
end, "Degraded",
  "Rollout of perps-bot:v3 rolled back (rolled back to perps-bot:v2; perps-bot:v3 is not tried again until "
    .. "spec.image names another version (or a retry)); prod runs perps-bot:v2")

case("prod baking after a promotion", function()
  local bot = running()
  bot.spec.image = "perps-bot:v3"
  bot.status.currentVersion = "perps-bot:v3"
  bot.status.rollout = { phase = "Baking", version = "perps-bot:v3", previousVersion = "perps-bot:v2",
    healthyCycles = 10, errors = 0, message = "baking perps-bot:v3 until 2026-11-21T10:05:00Z" }
  return bot
end, "Progressing", "Rollout Baking: baking perps-bot:v3 until 2026-11-21T10:05:00Z")

case("prod rolling back", function()
  local bot = running()
  bot.spec.image = "perps-bot:v3"
  bot.status.phase = "Pending"
  bot.status.rollout = { phase = "RollingBack", version = "perps-bot:v3", previousVersion = "perps-bot:v2",
    rollbackVersion = "perps-bot:v2", healthyCycles = 10, errors = 0,
    message = "rolling back to perps-bot:v2: crash loop" }
  return bot
end, "Progressing", "Rollout RollingBack: rolling back to perps-bot:v2: crash loop")

case("an aborted rollout after the spec went back to the running image", function()
  local bot = running()
  bot.spec.image = "perps-bot:v2"
  bot.status.rollout = { phase = "Aborted", version = "perps-bot:v3", previousVersion = "perps-bot:v2",
    healthyCycles = 2, errors = 3, message = "aborted: 3 cycle errors (maxErrors 0)" }
  return bot
end, "Healthy", "Running perps-bot:v2, mode Normal")

case("an aborted rollout when spec.image is unset (the operator's default image)", function()
  local bot = running()
  bot.spec.image = nil
  bot.status.rollout = { phase = "Aborted", version = "perps-bot:v3", previousVersion = "perps-bot:v2",
    healthyCycles = 0, errors = 0, message = "aborted: not ready within 600 s" }
  return bot
end, "Degraded", "Rollout of perps-bot:v3 aborted (aborted: not ready within 600 s); prod runs perps-bot:v2")

case("paused", function()
  local bot = running()
  bot.spec.paused = true
  bot.status.phase = "Paused"
  set_condition(bot, "Ready", "True", "Paused", "spec.paused: the operator changes nothing")
  return bot
end, "Suspended", "Paused (spec.paused): the operator changes no children; mode Normal")

case("paused before the operator observed it", function()
  local bot = running()
  bot.metadata.generation = 4
  bot.spec.paused = true
  return bot
end, "Suspended", "Paused (spec.paused): the operator changes no children; mode Normal")

case("a spec change the operator has not observed yet", function()
  local bot = running()
  bot.metadata.generation = 4
  return bot
end, "Progressing", "Waiting for the operator to observe generation 4 (status describes 3)")

case("a canary being started", function()
  local bot = running()
  bot.spec.image = "perps-bot:v3"
  bot.status.canaryVersion = "perps-bot:v3"
  bot.status.rollout = { phase = "CanaryStarting", version = "perps-bot:v3", previousVersion = "perps-bot:v2",
    healthyCycles = 0, errors = 0, message = "starting the canary of perps-bot:v3" }
  return bot
end, "Progressing", "Rollout CanaryStarting: starting the canary of perps-bot:v3")

case("a canary being evaluated", function()
  local bot = running()
  bot.spec.image = "perps-bot:v3"
  bot.status.canaryVersion = "perps-bot:v3"
  bot.status.canaryMode = "Normal"
  bot.status.rollout = { phase = "CanaryRunning", version = "perps-bot:v3", previousVersion = "perps-bot:v2",
    healthyCycles = 4, errors = 0, message = "canary of perps-bot:v3: 4/10 healthy cycles, 40/300 s" }
  set_condition(bot, "Progressing", "True", "CanaryRunning", bot.status.rollout.message)
  return bot
end, "Progressing", "Rollout CanaryRunning: canary of perps-bot:v3: 4/10 healthy cycles, 40/300 s")

case("a canary waiting for manual promotion", function()
  local bot = running()
  bot.spec.image = "perps-bot:v3"
  bot.status.rollout = { phase = "AwaitingPromotion", version = "perps-bot:v3", previousVersion = "perps-bot:v2",
    healthyCycles = 10, errors = 0,
    message = "canary of perps-bot:v3 passed; promote by setting spec.rollout.approvedVersion: perps-bot:v3" }
  return bot
end, "Progressing",
  "Rollout AwaitingPromotion: canary of perps-bot:v3 passed; promote by setting spec.rollout.approvedVersion: "
    .. "perps-bot:v3")

case("prod being replaced by the promoted version", function()
  local bot = running()
  bot.spec.image = "perps-bot:v3"
  bot.status.phase = "Pending"
  bot.status.currentVersion = "perps-bot:v3"
  bot.status.rollout = { phase = "Promoting", version = "perps-bot:v3", previousVersion = "perps-bot:v2",
    healthyCycles = 10, errors = 0, message = "replacing prod perps-bot:v2 with perps-bot:v3" }
  return bot
end, "Progressing", "Rollout Promoting: replacing prod perps-bot:v2 with perps-bot:v3")

case("a pod being replaced (Direct strategy)", function()
  local bot = running()
  bot.status.phase = "Pending"
  set_condition(bot, "Ready", "False", "PodNotReady", "waiting for the bot pod to be ready")
  set_condition(bot, "Progressing", "True", "PodReplacing", "the bot pod is being (re)started")
  return bot
end, "Progressing", "Pending: the bot pod is being (re)started")

case("a pod that is not ready yet", function()
  local bot = running()
  bot.status.phase = "Pending"
  bot.status.rollout = { phase = "Idle", version = "perps-bot:v2", healthyCycles = 0, errors = 0,
    message = "no rollout yet" }
  set_condition(bot, "Ready", "False", "PodNotReady", "waiting for the bot pod to be ready")
  set_condition(bot, "Progressing", "False", "Idle", "nothing to roll out")
  return bot
end, "Progressing", "Pending: waiting for the bot pod to be ready")

case("being deleted", function()
  local bot = running()
  bot.metadata.deletionTimestamp = "2026-11-21T10:05:00Z"
  bot.status.phase = "Terminating"
  bot.status.mode = "Halted"
  bot.status.modeReason = "the TradingBot is being deleted"
  return bot
end, "Progressing", "Being deleted: the bot is halted, then its pods are stopped")

case("phase Degraded without a Degraded condition", function()
  local bot = running()
  bot.status.phase = "Degraded"
  bot.status.conditions = {}
  return bot
end, "Degraded", "Degraded: see the TradingBot's conditions")

case("an unexpected combination", function()
  local bot = running()
  set_condition(bot, "Ready", "False", "PodNotReady", "waiting for the bot pod to be ready")
  return bot
end, "Progressing", "Phase Running, Ready False")

case("no conditions at all", function()
  local bot = running()
  bot.status.conditions = nil
  return bot
end, "Progressing", "Phase Running, Ready unknown")

local failures = 0
for _, c in ipairs(cases) do
  local fixture = c.build()
  local before = deep_copy(fixture)
  local ok, got = pcall(health, fixture)
  local problem
  if not ok then
    problem = "error: " .. tostring(got)
  elseif type(got) ~= "table" then
    problem = "returned " .. type(got) .. ", not a table"
  elseif got.status ~= c.status or got.message ~= c.message then
    problem = string.format("got %s %q, want %s %q", tostring(got.status), tostring(got.message), c.status, c.message)
  end
  -- The script must not change the object it is given.
  if problem == nil and not deep_equal(before, fixture) then
    problem = "the script changed the object"
  end
  if problem then
    failures = failures + 1
    print("FAIL  " .. c.name .. ": " .. problem)
  else
    print("ok    " .. c.name .. " -> " .. c.status)
  end
end

print(string.format("%d cases, %d failed", #cases, failures))
if failures > 0 then
  os.exit(1)
end
