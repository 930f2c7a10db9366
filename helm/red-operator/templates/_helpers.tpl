{{/* The release's full name: the release name, suffixed with the chart's unless it already holds it. */}}
{{- define "red-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "red-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "red-operator.labels" -}}
{{ include "red-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: red
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "red-operator.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "red-operator.fullname" .) -}}
{{- end -}}

{{- define "red-operator.subjects" -}}
- kind: ServiceAccount
  name: {{ include "red-operator.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end -}}

{{- define "red-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/*
What the operator does in a watched namespace, derived from operator/red_operator (kube.py's Rest calls,
reconcile.py, handlers.py) and kopf's own calls. federations: kopf lists and watches them and patches its
annotations; reconcile gets them. federations/status: kopf and the child-event handler patch it. get and
update on federations/status are not used by the operator itself: it grants them to each Federation's driver
Role, and RBAC lets a subject grant only verbs it holds.
*/}}
{{- define "red-operator.rules" -}}
- apiGroups: [red.dev]
  resources: [federations]
  verbs: [get, list, watch, patch]
- apiGroups: [red.dev]
  resources: [federations/status]
  verbs: [get, patch, update]
- apiGroups: [ray.io]
  resources: [rayclusters, rayjobs]
  verbs: [get, list, watch, create, delete]
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get, create, patch]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, create, patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}
