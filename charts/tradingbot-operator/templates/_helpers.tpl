{{- define "tbo.name" -}}tradingbot-operator{{- end }}

{{- define "tbo.fullname" -}}
{{- if contains "tradingbot-operator" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-tradingbot-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end }}

{{- define "tbo.labels" -}}
app.kubernetes.io/name: {{ include "tbo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "tbo.selector" -}}
app.kubernetes.io/name: {{ include "tbo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tbo.leaderElection" -}}
{{- $v := toString .Values.leaderElection.enabled -}}
{{- if eq $v "auto" -}}{{- if gt (int .Values.replicaCount) 1 -}}true{{- else -}}false{{- end -}}{{- else -}}{{ $v }}{{- end -}}
{{- end }}

{{/* Rules the operator needs in every namespace it manages (Role or ClusterRole). */}}
{{- define "tbo.rules" -}}
# Read and follow TradingBots; add and remove the halt-before-delete finalizer.
- apiGroups: ["trading.gpttrader.io"]
  resources: ["tradingbots"]
  verbs: ["get", "list", "watch", "patch"]
# Write status (mode, trips, rollout, conditions): the only place operator decisions live.
- apiGroups: ["trading.gpttrader.io"]
  resources: ["tradingbots/status"]
  verbs: ["get", "patch"]
# Follow TradingAccounts (limits over several bots); add and remove their finalizer.
- apiGroups: ["trading.gpttrader.io"]
  resources: ["tradingaccounts"]
  verbs: ["get", "list", "watch", "patch"]
# An account's totals, trips and mode.
- apiGroups: ["trading.gpttrader.io"]
  resources: ["tradingaccounts/status"]
  verbs: ["get", "patch"]
# Bot pods: created, and stopped before a replacement starts (read for their state: readiness,
# the version they run, and why a bot exited, e.g. credentials it could not use).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete"]
# Children: rendered bot config, metrics Services, the bots' ServiceAccounts.
- apiGroups: [""]
  resources: ["configmaps", "services", "serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Each bot's least-privilege Role and RoleBinding.
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Bots' identity Leases: the operator creates them (owned by the TradingBot) and gets one that
# already exists to check its owner. It holds update only because a Role it writes can grant
# no more than its writer holds: bots renew their own Leases (by name) with it.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
# Events for every decision a human would want to see.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# ServiceMonitors for bots that ask for one (only used when the CRD exists).
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["get", "create", "patch", "delete"]
{{- end }}

{{/* PrometheusRule: the labels of one alert; dict "sev" ("SEV-1".."SEV-3") "ctx" $.
     severity follows sev one to one: SEV-1 critical, SEV-2 warning, SEV-3 info. */}}
{{- define "tbo.alertLabels" -}}
{{- $severity := dict "SEV-1" "critical" "SEV-2" "warning" "SEV-3" "info" -}}
severity: {{ index $severity .sev }}
sev: {{ .sev }}
{{- with .ctx.Values.prometheusRule.alertLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* PrometheusRule: runbook_url of an alert; dict "alert" NAME "ctx" $. The anchor is the
     lowercased alert name, as GitHub renders a heading "### BotDown" (docs/RUNBOOK.md#botdown). */}}
{{- define "tbo.runbookUrl" -}}
{{- printf "%s#%s" .ctx.Values.prometheusRule.runbookBaseUrl (lower .alert) -}}
{{- end }}

{{/* PromQL matchers of bot scrape targets (limited to the watched namespaces when set). */}}
{{- define "tbo.botTargetSelector" -}}
{{- $matchers := list -}}
{{- with .Values.prometheusRule.botTargetSelector }}{{ $matchers = append $matchers . }}{{ end -}}
{{- with .Values.watchNamespaces }}{{ $matchers = append $matchers (printf "namespace=~%q" (join "|" .)) }}{{ end -}}
{{- join ", " $matchers -}}
{{- end }}

{{/* PromQL matchers of the operator's scrape target (default: metrics.serviceMonitor's job). */}}
{{- define "tbo.operatorTargetSelector" -}}
{{- .Values.prometheusRule.operatorTargetSelector | default (printf "job=%q, namespace=%q" (printf "%s-metrics" (include "tbo.fullname" .)) .Release.Namespace) -}}
{{- end }}
