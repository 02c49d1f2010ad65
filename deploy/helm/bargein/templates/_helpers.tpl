{{/* Names and labels shared by every template. */}}

{{- define "bargein.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bargein.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "bargein.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bargein.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bargein.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "bargein.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "bargein.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "bargein.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret the container's environment comes from: the user's, or the one this chart creates. */}}
{{- define "bargein.secretName" -}}
{{- default (include "bargein.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{/* Whether the chart creates a Secret: only when no existing one is named and some key has a value. */}}
{{- define "bargein.createSecret" -}}
{{- if and (not .Values.existingSecret) (or .Values.secrets.twilioAuthToken .Values.secrets.plivoAuthToken .Values.secrets.adminToken .Values.secrets.streamTokenSecret .Values.secrets.llmApiKey .Values.secrets.callStoreUrl) -}}
true
{{- end -}}
{{- end -}}

{{/* The Bitnami subchart's full name (its own naming rule), used for its Service and Secret. */}}
{{- define "bargein.postgresql.fullname" -}}
{{- if contains "postgresql" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-postgresql" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The grace period that covers preStop, the app's drain and its goodbye (values.yaml, "graceful drain"). */}}
{{- define "bargein.terminationGracePeriodSeconds" -}}
{{- add .Values.drain.preStopSleepSeconds .Values.drain.timeoutSeconds .Values.drain.marginSeconds -}}
{{- end -}}

{{/* True when more than one pod may serve calls at once. */}}
{{- define "bargein.multiReplica" -}}
{{- if or .Values.autoscaling.enabled .Values.keda.enabled (gt (int .Values.replicaCount) 1) -}}
true
{{- end -}}
{{- end -}}
