{{/* The release's objects are named after it, cut to what Kubernetes allows. */}}
{{- define "brigade-crgw.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "brigade-crgw.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "brigade-crgw.labels" -}}
{{ include "brigade-crgw.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "brigade-crgw.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "brigade-crgw.fullname" .) -}}
{{- end -}}

{{- define "brigade-crgw.brigadeNamespace" -}}
{{- .Values.brigadeNamespace | default .Release.Namespace -}}
{{- end -}}

{{/*
The ini file from .Values.config: a section per map, `key = value` per key
([server] shutdown_delay comes from .Values.shutdownDelaySeconds).
Whole numbers stay whole (YAML numbers arrive as floats), lists become
space-separated words, and nothing else is special, so a new key of the
gateway needs only its line in values.yaml.
*/}}
{{- define "brigade-crgw.ini" -}}
{{- if hasKey (.Values.config.server | default dict) "shutdown_delay" }}
{{- fail "set shutdownDelaySeconds, not config.server.shutdown_delay: the grace period follows it" }}
{{- end }}
{{- range $section, $keys := .Values.config }}
{{- printf "[%s]\n" $section }}
{{- if eq $section "server" }}
{{- printf "shutdown_delay = %v\n" (int64 $.Values.shutdownDelaySeconds) }}
{{- end }}
{{- range $key, $value := $keys }}
{{- $text := toString $value }}
{{- if kindIs "slice" $value }}
{{- $text = join " " $value }}
{{- else if and (kindIs "float64" $value) (eq $value (float64 (int64 $value))) }}
{{- $text = toString (int64 $value) }}
{{- else if kindIs "invalid" $value }}
{{- $text = "" }}
{{- end }}
{{- if $text }}
{{- printf "%s = %s\n" $key $text }}
{{- else }}
{{- printf "%s =\n" $key }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
The pod's grace period: shutdownDelaySeconds, then up to drain_seconds for
the webhooks in flight, and 10 s to spare; an explicit value must leave the
delay and the drain their time.
*/}}
{{- define "brigade-crgw.gracePeriod" -}}
{{- $delay := int64 .Values.shutdownDelaySeconds -}}
{{- $drain := int64 (.Values.config.server.drain_seconds | default 30) -}}
{{- $needed := add $delay $drain -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- add $needed 10 -}}
{{- else -}}
{{- $grace := int64 .Values.terminationGracePeriodSeconds -}}
{{- if lt $grace $needed -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least shutdownDelaySeconds + drain_seconds (%d)" $grace $needed) -}}
{{- end -}}
{{- $grace -}}
{{- end -}}
{{- end -}}
