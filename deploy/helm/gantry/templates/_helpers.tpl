{{/*
Names. The fullname is cut to 40 characters: pod names (<fullname>-<ordinal>), the per-ordinal peer
Services (<fullname>-peer-<ordinal>) and the StatefulSet's controller-revision-hash label must all
stay DNS labels of at most 63 characters.
*/}}
{{- define "gantry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "gantry.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "gantry.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. The gateway id is an annotation, never a label: the Kubernetes driver
garbage-collects by its own labels, and the chart's objects must never look like its sandboxes. */}}
{{- define "gantry.labels" -}}
helm.sh/chart: {{ include "gantry.chart" . }}
{{ include "gantry.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gantry
{{- end -}}

{{- define "gantry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gantry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "gantry.annotations" -}}
gantry/gateway-id: {{ .Values.gatewayId | quote }}
{{- end -}}

{{- define "gantry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gantry.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "gantry.headlessName" -}}
{{- printf "%s-headless" (include "gantry.fullname" .) -}}
{{- end -}}

{{- define "gantry.caSecretName" -}}
{{- default (printf "%s-ca" (include "gantry.fullname" .)) .Values.tls.ca.existingSecret -}}
{{- end -}}

{{- define "gantry.joinTokenSecretName" -}}
{{- default (printf "%s-join-token" (include "gantry.fullname" .)) .Values.bootstrap.joinToken.existingSecret -}}
{{- end -}}

{{/* Cluster-scoped objects (ClusterRoles, bindings, admission policies) carry the release namespace
in their name, so two releases of the same name in different namespaces never collide. */}}
{{- define "gantry.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "gantry.fullname" .) | trunc 230 | trimSuffix "-" -}}
{{- end -}}

{{- define "gantry.sharedNamespace" -}}
{{- .Values.driver.kubernetes.sharedNamespace -}}
{{- end -}}

{{/* Whether this render can read the cluster (helm install/upgrade), as opposed to "helm template",
a client-side dry run or "helm lint", where lookup returns nothing (Argo CD and Flux render so).
kube-system exists in every cluster. */}}
{{- define "gantry.canLookup" -}}
{{- if (lookup "v1" "Namespace" "" "kube-system") -}}true{{- end -}}
{{- end -}}

{{- define "gantry.kubernetesDriver" -}}
{{- if eq .Values.driver.name "kubernetes" -}}true{{- end -}}
{{- end -}}

{{- define "gantry.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* Where things live inside the pod. The volume is mounted at stateDir; gantryd's data_dir is a
directory inside it, so that the file system's lost+found never makes a fresh volume look used and
the bootstrap admin key sits beside, not inside, gantryd's data. */}}
{{- define "gantry.stateDir" -}}/var/lib/gantry{{- end -}}
{{- define "gantry.dataDir" -}}/var/lib/gantry/data{{- end -}}
{{- define "gantry.adminKeyFile" -}}/var/lib/gantry/bootstrap-admin.key{{- end -}}

{{/*
Checks that values.schema.json cannot express (it sees one value at a time). Each failure says what
to change.
*/}}
{{- define "gantry.validate" -}}
{{- $k := .Values.driver.kubernetes -}}
{{- if and (eq .Values.driver.name "kubernetes") (eq $k.namespaceMode "operator") (empty $k.namespaces) -}}
{{- fail "driver.kubernetes.namespaceMode=operator needs driver.kubernetes.namespaces: the allowlist of existing namespaces the driver may use" -}}
{{- end -}}
{{- if and (eq .Values.driver.name "kubernetes") (ne $k.namespaceMode "operator") (not (empty $k.namespaces)) -}}
{{- fail (printf "driver.kubernetes.namespaces is only used in operator mode, but namespaceMode is %s: remove it or switch the mode" $k.namespaceMode) -}}
{{- end -}}
{{- if and (eq .Values.driver.name "kubernetes") (ne $k.namespaceMode "shared") $k.sharedNamespace -}}
{{- fail (printf "driver.kubernetes.sharedNamespace is only used in shared mode, but namespaceMode is %s" $k.namespaceMode) -}}
{{- end -}}
{{- if and (eq .Values.driver.name "kubernetes") (eq $k.namespaceMode "shared") (not $k.sharedNamespace) -}}
{{- fail "driver.kubernetes.namespaceMode=shared needs driver.kubernetes.sharedNamespace: a namespace of its own for the sandboxes (not the release namespace, where the gateway's Secrets live)" -}}
{{- end -}}
{{- if and (eq .Values.driver.name "kubernetes") (eq $k.namespaceMode "shared") (eq $k.sharedNamespace .Release.Namespace) -}}
{{- fail (printf "driver.kubernetes.sharedNamespace is the release namespace %s: sandbox pods there could mount the gateway's Secrets (its CA key, its join token); give the sandboxes a namespace of their own" .Release.Namespace) -}}
{{- end -}}
{{- if and (eq .Values.driver.name "kubernetes") (eq $k.namespaceMode "operator") (has .Release.Namespace $k.namespaces) -}}
{{- fail (printf "driver.kubernetes.namespaces lists the release namespace %s: sandbox pods there could mount the gateway's Secrets; allowlist other namespaces" .Release.Namespace) -}}
{{- end -}}
{{- $ownSA := include "gantry.serviceAccountName" . -}}
{{- range $sa := $k.serviceAccounts -}}
{{- if or (eq $sa $ownSA) (eq $sa "gantry") -}}
{{- fail (printf "driver.kubernetes.serviceAccounts lists %s, the gateway's own ServiceAccount name: sandboxes must never run with the gateway's rights; list accounts made for sandboxes" $sa) -}}
{{- end -}}
{{- end -}}
{{- $guard := and $k.namespaceGuard (.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy") -}}
{{- if and .Values.rbac.create (eq .Values.driver.name "kubernetes") (eq $k.namespaceMode "managed") (not (empty $k.imagePullSecrets)) (not $guard) -}}
{{- fail "driver.kubernetes.imagePullSecrets in managed mode needs the namespace guard: copying the Secrets needs create and update on secrets, which the chart grants the driver's ClusterRole in managed mode only with the guard (driver.kubernetes.namespaceGuard, a ValidatingAdmissionPolicy, served from Kubernetes 1.30), because only the guard narrows it from every namespace to openshell-{gatewayId}-*. Keep namespaceGuard=true on Kubernetes 1.30+, or leave imagePullSecrets empty and pull sandbox images without them" -}}
{{- end -}}
{{- if .Values.tls.api.existingSecret -}}
{{- fail "tls.api.existingSecret is not supported: gantryd serves one certificate on the API port, and every replica that joins the cluster verifies that port against the cluster CA, so a certificate from another CA makes replicas 1..n fail to join (\"server's certificate is not trusted\"). Give the cluster your own CA instead (tls.ca.existingSecret, e.g. the CA of a cert-manager CA issuer, which your clients already trust) and put the API's public names into tls.extraSans" -}}
{{- end -}}
{{- with .Values.scaleDown.removedOrdinals -}}
{{- $want := printf "%d-%d" (int $.Values.replicaCount) (add (int $.Values.replicaCount) 1) -}}
{{- if ne . $want -}}
{{- fail (printf "scaleDown.removedOrdinals is %q, but lowering replicaCount to %d removes ordinals %s (one step at a time: 7 -> 5 -> 3): remove those members from the cluster first (gantry cluster remove <id>), then set removedOrdinals to %q" . (int $.Values.replicaCount) $want $want) -}}
{{- end -}}
{{- end -}}
{{- if and (eq .Values.driver.name "kubernetes") (not .Values.rbac.create) (not .Values.serviceAccount.name) -}}
{{- fail "rbac.create=false with the kubernetes driver: set serviceAccount.name to an account that already has the driver's rights" -}}
{{- end -}}
{{- if gt (int .Values.updateStrategy.partition) (int .Values.replicaCount) -}}
{{- fail (printf "updateStrategy.partition (%d) is larger than replicaCount (%d): no replica would ever be updated" (int .Values.updateStrategy.partition) (int .Values.replicaCount)) -}}
{{- end -}}
{{- $reserved := list "config" "replica_id" "replica_name" "data_dir" "api_address" "peer_address" "peer_advertise_address" "admin_address" "gateway_id" "failure_domain" "join" "join_token" "join_token_file" "join_ca_file" "cert_sans" "api_tls_cert" "api_tls_key" "api_tls_client_ca" "log_level" "latency_ms" "roles_grace_ms" "max_message_bytes" "max_concurrent_streams" "driver" "k8s_namespace_mode" "k8s_namespaces" "k8s_shared_namespace" "egress_relay_k8s_address" "egress_relay_k8s_port" "egress_relay_k8s_pod_selector" -}}
{{- range $key, $_ := .Values.config.extra -}}
{{- if has $key $reserved -}}
{{- fail (printf "config.extra.%s is set by the chart itself (from its own value, per replica, or by the start script): remove it from config.extra" $key) -}}
{{- end -}}
{{- end -}}
{{- range $i, $rule := $k.rules -}}
{{- range $f := list "apiGroups" "resources" "verbs" -}}
{{- range $v := get $rule $f -}}
{{- if or (eq $v "*") (eq $v "*/*") (has $v (list "escalate" "bind" "impersonate")) -}}
{{- fail (printf "driver.kubernetes.rules[%d].%s contains %q: the driver gets no wildcards and no escalate, bind or impersonate rights" $i $f $v) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* The driver's own needs (drivers/k8s.h) where its sandboxes live: Sandbox objects, listed and
watched for its cache. (Its fence has a Role of its own in the release namespace.) */ -}}
{{- $needs := list (list "agents.x-k8s.io" "sandboxes" "get") (list "agents.x-k8s.io" "sandboxes" "list") (list "agents.x-k8s.io" "sandboxes" "watch") (list "agents.x-k8s.io" "sandboxes" "create") (list "agents.x-k8s.io" "sandboxes" "delete") -}}
{{- if eq .Values.driver.name "kubernetes" -}}
{{- range $need := $needs -}}
{{- $granted := false -}}
{{- range $rule := $k.rules -}}
{{- if and (has (index $need 0) (default (list) $rule.apiGroups)) (has (index $need 1) $rule.resources) (has (index $need 2) $rule.verbs) -}}
{{- $granted = true -}}
{{- end -}}
{{- end -}}
{{- if not $granted -}}
{{- fail (printf "driver.kubernetes.rules grant no %q on %s%s: the kubernetes driver needs get, list, watch, create and delete on sandboxes.agents.x-k8s.io" (index $need 2) (index $need 1) (ternary "" (printf ".%s" (index $need 0)) (eq (index $need 0) ""))) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $seen := dict -}}
{{- range $ordinal, $id := .Values.bootstrap.replicaIdOverrides -}}
{{- if hasKey $seen (toString $id) -}}
{{- fail (printf "bootstrap.replicaIdOverrides gives id %v to two ordinals: replica ids are unique" $id) -}}
{{- end -}}
{{- $_ := set $seen (toString $id) true -}}
{{- end -}}
{{- /* Two releases with one gateway id would garbage-collect each other's sandboxes. The cluster-scoped
objects of managed and operator modes make a clash visible at install ("helm template" sees none). */ -}}
{{- if and (eq .Values.driver.name "kubernetes") (ne $k.namespaceMode "shared") -}}
{{- $mine := include "gantry.clusterName" . -}}
{{- range $cr := (lookup "rbac.authorization.k8s.io/v1" "ClusterRole" "" "").items | default list -}}
{{- $ann := $cr.metadata.annotations | default dict -}}
{{- if and (eq (get $ann "gantry/gateway-id") $.Values.gatewayId) (ne $cr.metadata.name (printf "%s-driver" $mine)) (ne $cr.metadata.name (printf "%s-driver-namespaces" $mine)) -}}
{{- fail (printf "gatewayId %q is already used by another gantry release (ClusterRole %s, release %s in namespace %s): every gateway cluster in one Kubernetes cluster needs its own gatewayId" $.Values.gatewayId $cr.metadata.name (get $ann "meta.helm.sh/release-name") (get $ann "meta.helm.sh/release-namespace")) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
