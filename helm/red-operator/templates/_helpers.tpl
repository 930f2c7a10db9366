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
reconcile.py, passes.py, handlers.py) and kopf's own calls; nothing more.
federations: kopf lists and watches them (an index) and patches its annotations (and removes a finalizer an
older release left); get is held only so that the operator may grant it to each Federation's driver Role
(RBAC lets a subject grant only verbs it holds). federations/status: the operator patches it; get is,
likewise, for the driver Role. federations/finalizers update: children set blockOwnerDeletion, which
OwnerReferencesPermissionEnforcement (OpenShift) allows only to who may update the owner's finalizers.
Children: listed and watched (kopf indices), created, and read after a 409 to see whose the name is;
RayClusters and RayJobs are deleted when replaced, finished or suspended, Roles' rules patched back after a
hand edit, a RoleBinding whose roleRef changed deleted and recreated, ServiceAccounts' annotations patched to
the spec's serviceAccountAnnotations and a worker group's account deleted when no group asks for it.
events: one per child change.
*/}}
{{- define "red-operator.rules" -}}
- apiGroups: [red.dev]
  resources: [federations]
  verbs: [get, list, watch, patch]
- apiGroups: [red.dev]
  resources: [federations/status]
  verbs: [get, patch]
- apiGroups: [red.dev]
  resources: [federations/finalizers]
  verbs: [update]
- apiGroups: [ray.io]
  resources: [rayclusters, rayjobs]
  verbs: [get, list, watch, create, delete]
# A Federation's RayService (spec.serve): patched when spec.serve or the Pods change, deleted when serving stops.
- apiGroups: [ray.io]
  resources: [rayservices]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles]
  verbs: [get, list, watch, create, patch]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [rolebindings]
  verbs: [get, list, watch, create, patch, delete]
# A Federation's claim: created, never deleted (retain: false leaves that to GC, through its owner reference).
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, list, watch, create]
# A Federation's Ray Pods, listed while its RayCluster is not ready: a Pod the kubelet cannot start for want
# of the storage Secret says so. The operator has no rights on Secrets.
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# A queued Federation (label kueue.x-k8s.io/queue-name): why Kueue holds its RayCluster, from the Workload.
- apiGroups: [kueue.x-k8s.io]
  resources: [workloads]
  verbs: [list]
{{- end -}}
