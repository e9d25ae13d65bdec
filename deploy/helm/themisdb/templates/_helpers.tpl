{{/* Names and labels shared by every template. */}}

{{- define "themisdb.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "themisdb.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "themisdb.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "themisdb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels; pass (dict "root" $ "component" "worker"). */}}
{{- define "themisdb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "themisdb.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "themisdb.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Environment of both workloads: the config file, the broker, then `env`. */}}
{{- define "themisdb.env" -}}
- name: THEMIS_CONFIG
  value: /etc/themis/features.yaml
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ required "kafka.bootstrapServers is required" .Values.kafka.bootstrapServers | quote }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* The Secret and key holding the workers' page key. */}}
{{- define "themisdb.pageKeySecret" -}}
{{- .Values.pageKey.existingSecret | default (printf "%s-page-key" (include "themisdb.fullname" .)) -}}
{{- end }}

{{- define "themisdb.pageKeyEnv" -}}
- name: THEMIS_WORKER_PAGE_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "themisdb.pageKeySecret" . }}
      key: {{ .Values.pageKey.secretKey }}
{{- end }}
