{{/* Chart name, truncated to a DNS label. */}}
{{- define "modelservice-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: RELEASE-CHART, or RELEASE when it already contains the chart name. */}}
{{- define "modelservice-operator.fullname" -}}
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

{{- define "modelservice-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "modelservice-operator.labels" -}}
helm.sh/chart: {{ include "modelservice-operator.chart" . }}
{{ include "modelservice-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelservice
{{- end }}

{{/* Labels selecting the operator pod. */}}
{{- define "modelservice-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelservice-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "modelservice-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modelservice-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* REPOSITORY@DIGEST, or REPOSITORY:TAG (tag defaults to the appVersion). Argument: dict image, root. */}}
{{- define "modelservice-operator.imageRef" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/* true when the operator watches a fixed list of namespaces. */}}
{{- define "modelservice-operator.namespaced" -}}
{{- if .Values.watchNamespaces }}true{{- end }}
{{- end }}

{{/*
RBAC rules for the namespaced resources the operator reads and writes.
Kept equal to operator/modelservice/api/permissions.py by tests/chart (both directions).
*/}}
{{- define "modelservice-operator.namespacedRules" -}}
# The ModelService objects and their status.
- apiGroups: [modelservice.dev]
  resources: [modelservices]
  verbs: [get, list, watch, patch]
- apiGroups: [modelservice.dev]
  resources: [modelservices/status]
  verbs: [get, patch]
# Children: Triton Deployment, conversion Job, Service, config, model repository, PDB, HPA, exposure.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [services, configmaps, persistentvolumeclaims]
  verbs: [get, list, watch, create, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch]
- apiGroups: [networking.k8s.io]
  resources: [ingresses]
  verbs: [get, list, watch, create, patch]
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, list, watch, create, patch]
# Observing pods (conversion Job results, Triton readiness).
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
# kopf posts events about handler progress and errors.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create]
{{- end }}

{{/* Cluster-scoped reads kopf needs in every mode: resource and namespace discovery. */}}
{{- define "modelservice-operator.clusterRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [get, list, watch]
{{- end }}

{{/* Selector labels of every Triton serving pod the operator creates (render/names.py selector_labels). */}}
{{- define "modelservice-operator.tritonPodLabels" -}}
app.kubernetes.io/name: modelservice
app.kubernetes.io/component: server
{{- end }}
