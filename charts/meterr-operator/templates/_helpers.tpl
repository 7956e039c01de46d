{{/* The records namespace: recordsNamespace or the release's namespace. */}}
{{- define "meterr.recordsNamespace" -}}
{{- default .Release.Namespace .Values.recordsNamespace -}}
{{- end -}}

{{/* The image: repository@digest when image.digest is set, else repository:tag. */}}
{{- define "meterr.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object; "component" is set by the caller. */}}
{{- define "meterr.labels" -}}
app.kubernetes.io/name: meterr-operator
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
app.kubernetes.io/part-of: meterr-operator
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels: config/'s, and the release (app.kubernetes.io/instance). */}}
{{- define "meterr.selectorLabels" -}}
app.kubernetes.io/name: meterr-operator
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/*
A Deployment's spec.selector.matchLabels. A selector cannot change, and
releases of chart 0.1.0 selected without app.kubernetes.io/instance: when
the Deployment exists (helm upgrade), its selector is kept as it is; the
pods carry both sets of labels. New installs, and renders without a cluster
(helm template), select by meterr.selectorLabels.
*/}}
{{- define "meterr.deploymentSelector" -}}
{{- $d := lookup "apps/v1" "Deployment" .root.Release.Namespace .name -}}
{{- $old := dig "spec" "selector" "matchLabels" dict $d -}}
{{- if $old -}}
{{- toYaml $old -}}
{{- else -}}
{{- include "meterr.selectorLabels" . -}}
{{- end -}}
{{- end -}}

{{/* A component's ServiceAccount: its own name unless serviceAccount.name is set. */}}
{{- define "meterr.serviceAccountName" -}}
{{- $sa := index .root.Values .key "serviceAccount" -}}
{{- default (printf "%s-%s" .root.Values.namePrefix .component) $sa.name -}}
{{- end -}}

{{- define "meterr.authServer.tlsSecret" -}}
{{- default (printf "%s-auth-server-tls" .Values.namePrefix) .Values.authServer.tls.secretName -}}
{{- end -}}

{{/*
Pod and container security contexts: podSecurityContext and
securityContext, each merged over by the component's own (.key: manager or
authServer). The defaults are config/'s. A key set to null is left out
(e.g. runAsUser on OpenShift, whose restricted SCC assigns one).
*/}}
{{- define "meterr.podSecurityContext" -}}
{{- $c := index .root.Values .key -}}
{{- toYaml (mergeOverwrite (deepCopy (.root.Values.podSecurityContext | default dict)) ($c.podSecurityContext | default dict)) -}}
{{- end -}}

{{- define "meterr.securityContext" -}}
{{- $c := index .root.Values .key -}}
{{- toYaml (mergeOverwrite (deepCopy (.root.Values.securityContext | default dict)) ($c.securityContext | default dict)) -}}
{{- end -}}

{{/* Values the chart refuses, with what to set instead. */}}
{{- define "meterr.validate" -}}
{{- $a := .Values.authServer -}}
{{- $n := .Values.networkPolicy -}}
{{- if not (and (hasKey $n "apiServer") (hasKey $n "dns") (hasKey $n "redis") (hasKey $a.grpc "clientCA")) -}}
{{- fail "the values lack networkPolicy.apiServer, .dns, .redis or authServer.grpc.clientCA, which this chart has: helm upgrade --reuse-values renders with the previous chart's defaults; use --reset-then-reuse-values (Helm 3.14 or newer)" -}}
{{- end -}}
{{- if and $a.grpc.clientCA.enabled (not $a.tls.enabled) -}}
{{- fail "authServer.grpc.clientCA.enabled needs authServer.tls.enabled: client certificates are only asked for over TLS" -}}
{{- end -}}
{{- if and $a.grpc.clientCA.enabled (not $a.grpc.enabled) -}}
{{- fail "authServer.grpc.clientCA.enabled needs authServer.grpc.enabled" -}}
{{- end -}}
{{- if hasKey $n "apiServerPorts" -}}
{{- fail "networkPolicy.apiServerPorts is now networkPolicy.apiServer.ports" -}}
{{- end -}}
{{- if hasKey $n "redisPort" -}}
{{- fail "networkPolicy.redisPort is now networkPolicy.redis.port" -}}
{{- end -}}
{{- if and $n.enabled (not $n.dns.peers) -}}
{{- fail "networkPolicy.dns.peers is empty: name the cluster DNS (an egress rule without peers would admit any address)" -}}
{{- end -}}
{{- end -}}

{{- define "meterr.authServer.grpcClientCASecret" -}}
{{- default (include "meterr.authServer.tlsSecret" .) .Values.authServer.grpc.clientCA.secretName -}}
{{- end -}}

{{/*
The API server, as a JSON object {"cidrs": [...], "ports": [...]} for the
egress rules: networkPolicy.apiServer.cidrs if set; else, with lookup, the
addresses of the kubernetes EndpointSlice (or Endpoints) in "default" (what
policies see after the Service's DNAT) and its ports, plus the Service's
ClusterIPs (for implementations that see the packet before DNAT). Empty
cidrs when none is known: without a cluster (helm template, Argo CD), or
on Cilium unless its policy-cidr-match-mode includes "nodes" (by default
Cilium's ipBlocks never match node addresses, where the API server often
listens, so pinning them would cut it off).
*/}}
{{- define "meterr.networkPolicy.apiServer" -}}
{{- $c := .Values.networkPolicy.apiServer -}}
{{- $cidrs := list -}}
{{- $ports := list -}}
{{- range $c.ports }}{{ $ports = append $ports (int .) }}{{ end -}}
{{- if $c.cidrs -}}
{{- $cidrs = $c.cidrs -}}
{{- else if $c.lookup -}}
{{- $cilium := lookup "v1" "ConfigMap" "kube-system" "cilium-config" -}}
{{- if or (not $cilium) (contains "nodes" (dig "data" "policy-cidr-match-mode" "" $cilium)) -}}
{{- $ips := list -}}
{{- $slice := lookup "discovery.k8s.io/v1" "EndpointSlice" "default" "kubernetes" -}}
{{- if $slice -}}
{{- range $slice.endpoints | default list }}{{ range .addresses | default list }}{{ $ips = append $ips . }}{{ end }}{{ end -}}
{{- range $slice.ports | default list }}{{ $ports = append $ports (int .port) }}{{ end -}}
{{- else -}}
{{- $ep := lookup "v1" "Endpoints" "default" "kubernetes" -}}
{{- range dig "subsets" list $ep }}
{{- range .addresses | default list }}{{ $ips = append $ips .ip }}{{ end -}}
{{- range .ports | default list }}{{ $ports = append $ports (int .port) }}{{ end -}}
{{- end -}}
{{- end -}}
{{- if $ips -}}
{{- $svc := lookup "v1" "Service" "default" "kubernetes" -}}
{{- range dig "spec" "clusterIPs" list $svc }}{{ $ips = append $ips . }}{{ end -}}
{{- range $ips }}{{ $cidrs = append $cidrs (printf "%s/%s" . (ternary "128" "32" (contains ":" .))) }}{{ end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- dict "cidrs" ($cidrs | uniq) "ports" ($ports | uniq) | toJson -}}
{{- end -}}

{{/* The egress rule to the API server, from meterr.networkPolicy.apiServer. */}}
{{- define "meterr.networkPolicy.apiServerRule" -}}
{{- $api := . -}}
{{- if $api.cidrs }}
# The API server (networkPolicy.apiServer): the addresses it listens on, as
# policies see them after the kubernetes Service's DNAT.
- to:
    {{- range $api.cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    {{- range $api.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- else }}
# The API server's ports, to any address: its addresses were not known when
# this was rendered (helm template and Argo CD render without a cluster).
# Pin them with networkPolicy.apiServer.cidrs (kubectl get endpointslice -n
# default kubernetes). No `to:` rather than an ipBlock of 0.0.0.0/0, which
# Cilium never matches to the nodes the API server often runs on.
- ports:
    {{- range $api.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end }}
{{- end -}}
