{{/*
Chart name, truncated to the 63 characters a label value may hold.
*/}}
{{- define "lormas-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the release name, suffixed with the chart name unless it already contains it.
*/}}
{{- define "lormas-agent.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lormas-agent.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride }}
{{- end }}

{{- define "lormas-agent.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lormas-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lormas-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of every object except the test pod, which must not match the DaemonSet's selector
(a DaemonSet adopts orphan pods that match it).
*/}}
{{- define "lormas-agent.labels" -}}
{{ include "lormas-agent.selectorLabels" . }}
app.kubernetes.io/component: node-agent
{{ include "lormas-agent.commonLabels" . }}
{{- end }}

{{- define "lormas-agent.commonLabels" -}}
helm.sh/chart: {{ include "lormas-agent.chart" . }}
app.kubernetes.io/part-of: lormas
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "lormas-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lormas-agent.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The agent image: repository:tag, or repository@digest when a digest is given.
*/}}
{{- define "lormas-agent.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Settings that must never carry a token as a plain value: fail the render instead.
*/}}
{{- define "lormas-agent.validate" -}}
{{- $secretVars := list "NODE_TOKEN" "ENROLLMENT_TOKEN" }}
{{- range $k, $v := .Values.config }}
{{- if has $k $secretVars }}
{{- fail (printf "config.%s: tokens are never plain values; use token.source (a Secret mounted as a file)" $k) }}
{{- end }}
{{- end }}
{{- $chartVars := list "SERVER_URL" "HEALTH_ADDR" "HOST_PROC" "STATE_DIR" "NODE_NAME" "NODE_TOKEN_FILE" "ENROLLMENT_TOKEN_FILE" "TLS_CA_FILE" "TLS_CERT_FILE" "TLS_KEY_FILE" "TLS_INSECURE_SKIP_VERIFY" "VOLUME_ROOTS" }}
{{- range $k, $v := .Values.config }}
{{- if has $k $chartVars }}
{{- fail (printf "config.%s is set by the chart (server, healthPort, hostProc, token, volumeRoots): set it there" $k) }}
{{- end }}
{{- end }}
{{- range .Values.extraEnv }}
{{- if eq .name "VOLUME_ROOTS" }}
{{- fail "extraEnv VOLUME_ROOTS: set volumeRoots instead (each root must also be mounted into the agent at the same path)" }}
{{- end }}
{{- end }}
{{- range $a := .Values.volumeRoots }}
{{- range $b := $.Values.volumeRoots }}
{{- if and (ne $a $b) (hasPrefix (printf "%s/" $b) $a) }}
{{- fail (printf "volumeRoots %s and %s nest: a root may not lie inside another" $b $a) }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq .Values.token.source "enrollment" }}
{{- $state := .Values.token.enrollment.stateHostPath }}
{{- range .Values.volumeRoots }}
{{- if or (eq . $state) (hasPrefix (printf "%s/" .) $state) (hasPrefix (printf "%s/" $state) .) }}
{{- fail (printf "token.enrollment.stateHostPath %s and volumeRoots %s overlap: the agent's state (node key and token) may not lie under a volume root, nor a root in it" $state .) }}
{{- end }}
{{- end }}
{{- end }}
{{- range .Values.extraEnv }}
{{- if and (has .name $secretVars) (hasKey . "value") }}
{{- fail (printf "extraEnv %s: tokens are never plain values; use token.source (a Secret mounted as a file)" .name) }}
{{- end }}
{{- end }}
{{- if not (has .Values.token.source (list "existingSecret" "perNode" "enrollment")) }}
{{- fail (printf "token.source %q: must be existingSecret, perNode or enrollment" .Values.token.source) }}
{{- end }}
{{- if and .Values.tests.enabled (not .Values.service.enabled) }}
{{- fail "tests.enabled needs service.enabled: the test pod checks the agents through their Service" }}
{{- end }}
{{- end }}

{{/*
The ConfigMap's data: chart-managed settings first, then the operator's config map.
*/}}
{{- define "lormas-agent.configData" -}}
SERVER_URL: {{ .Values.server.url | quote }}
HEALTH_ADDR: {{ printf ":%d" (int .Values.healthPort) | quote }}
{{- if .Values.hostProc.enabled }}
HOST_PROC: "/host/proc"
{{- end }}
{{- if .Values.server.tls.insecureSkipVerify }}
TLS_INSECURE_SKIP_VERIFY: "true"
{{- end }}
VOLUME_ROOTS: {{ join "," .Values.volumeRoots | quote }}
{{- range $k, $v := .Values.config }}
{{ $k }}: {{ $v | toString | quote }}
{{- end }}
{{- end }}
