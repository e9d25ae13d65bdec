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

{{/* The headless worker Service; it names every worker pod's address. */}}
{{- define "themisdb.workerService" -}}
{{- printf "%s-worker" (include "themisdb.fullname" .) -}}
{{- end }}

{{/* Every worker pod's page URL, comma-separated (facade.worker_urls), unless
facade.workerUrls is set: http://<pod>.<service>.<namespace>.svc.<domain>:<port>. */}}
{{- define "themisdb.workerUrls" -}}
{{- if .Values.facade.workerUrls -}}
{{- .Values.facade.workerUrls -}}
{{- else -}}
{{- $service := include "themisdb.workerService" . -}}
{{- $urls := list -}}
{{- range $i := until (int .Values.worker.replicas) -}}
{{- $urls = append $urls (printf "http://%s-%d.%s.%s.svc.%s:%v" $service $i $service $.Release.Namespace $.Values.clusterDomain $.Values.config.worker.web_port) -}}
{{- end -}}
{{- join "," $urls -}}
{{- end -}}
{{- end }}

{{/* The Secret holding the facade's API keys. */}}
{{- define "themisdb.apiKeysSecret" -}}
{{- .Values.apiKeys.existingSecret | default (printf "%s-api-keys" (include "themisdb.fullname" .)) -}}
{{- end }}

{{/* The Secret holding the facade's certificate (tls.crt, tls.key, ca.crt). */}}
{{- define "themisdb.tlsSecret" -}}
{{- .Values.tls.existingSecret | default (printf "%s-tls" (include "themisdb.fullname" .)) -}}
{{- end }}

{{/* Where the facade container finds the TLS files. */}}
{{- define "themisdb.tlsDir" -}}
/etc/themis-tls
{{- end }}
