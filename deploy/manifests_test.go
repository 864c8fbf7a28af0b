package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/huleedu/websocket-service/config"
	"github.com/huleedu/websocket-service/server"
)

// containerName is the service's container in the Deployment.
const containerName = "websocket-service"

// secretExampleFile documents the Secret; it is deliberately not a kustomization resource.
const secretExampleFile = "secret.example.yaml"

// shutdownMargin is what the pod needs after the last drain close and before SIGKILL:
// unsubscribe, close Redis, flush logs, exit. terminationGracePeriodSeconds must cover the
// preStop sleep, SHUTDOWN_DRAIN_TIMEOUT and this.
const shutdownMargin = 5 * time.Second

// kustomization is the part of a kustomize Kustomization these manifests use. Decoding is
// strict, so a field added to kustomization.yaml must be added here (and then checked).
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
}

// manifests is the decoded content of a k8s/ directory.
type manifests struct {
	dir           string
	kustomization kustomization
	deployment    *appsv1.Deployment
	service       *corev1.Service
	configMap     *corev1.ConfigMap
	hpa           *autoscalingv2.HorizontalPodAutoscaler
	pdb           *policyv1.PodDisruptionBudget
	secret        *corev1.Secret // from secretExampleFile
}

// documentSeparator splits a multi-document YAML file.
var documentSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decodeManifest decodes one YAML document strictly into the Kubernetes API type its
// apiVersion and kind name: an unknown or misspelt field, a duplicate key or a wrongly typed
// value is an error, as it would be for `kubectl apply --validate=strict`.
func decodeManifest(doc []byte) (any, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, fmt.Errorf("read apiVersion/kind: %w", err)
	}
	var obj any
	switch tm.APIVersion + " " + tm.Kind {
	case "apps/v1 Deployment":
		obj = &appsv1.Deployment{}
	case "v1 Service":
		obj = &corev1.Service{}
	case "v1 ConfigMap":
		obj = &corev1.ConfigMap{}
	case "v1 Secret":
		obj = &corev1.Secret{}
	case "autoscaling/v2 HorizontalPodAutoscaler":
		obj = &autoscalingv2.HorizontalPodAutoscaler{}
	case "policy/v1 PodDisruptionBudget":
		obj = &policyv1.PodDisruptionBudget{}
	default:
		return nil, fmt.Errorf("unexpected apiVersion %q kind %q", tm.APIVersion, tm.Kind)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, fmt.Errorf("%s %s: %w", tm.APIVersion, tm.Kind, err)
	}
	return obj, nil
}

// decodeFile decodes every document of a manifest file.
func decodeFile(file string) ([]any, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var out []any
	for i, doc := range documentSeparator.Split(string(data), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		obj, err := decodeManifest([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("%s document %d: %w", file, i+1, err)
		}
		out = append(out, obj)
	}
	return out, nil
}

// stripComments drops whole-line YAML comments, to tell an empty document from a real one.
func stripComments(doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// loadManifests decodes kustomization.yaml, every resource it lists and the Secret example,
// and requires exactly one of each kind the service needs.
func loadManifests(dir string) (*manifests, error) {
	m := &manifests{dir: dir}
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return nil, err
	}
	if err := yaml.UnmarshalStrict(data, &m.kustomization); err != nil {
		return nil, fmt.Errorf("kustomization.yaml: %w", err)
	}
	var errs []error
	files := append(slices.Clone(m.kustomization.Resources), secretExampleFile)
	for _, f := range files {
		objs, err := decodeFile(filepath.Join(dir, f))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, obj := range objs {
			if err := m.add(f, obj); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	// Checked here, not with the rest, because a file left out shows up first as a missing
	// kind below, which would hide the cause.
	if err := checkKustomizationCoversDirectory(m); err != nil {
		errs = append(errs, err)
	}
	for what, missing := range map[string]bool{
		"Deployment": m.deployment == nil, "Service": m.service == nil, "ConfigMap": m.configMap == nil,
		"HorizontalPodAutoscaler": m.hpa == nil, "PodDisruptionBudget": m.pdb == nil, "Secret (example)": m.secret == nil,
	} {
		if missing {
			errs = append(errs, fmt.Errorf("%s: no %s", dir, what))
		}
	}
	return m, errors.Join(errs...)
}

// add files obj under its kind; a second object of a kind is an error, because every check
// below assumes one of each.
func (m *manifests) add(file string, obj any) error {
	var dup bool
	switch o := obj.(type) {
	case *appsv1.Deployment:
		dup, m.deployment = m.deployment != nil, o
	case *corev1.Service:
		dup, m.service = m.service != nil, o
	case *corev1.ConfigMap:
		dup, m.configMap = m.configMap != nil, o
	case *autoscalingv2.HorizontalPodAutoscaler:
		dup, m.hpa = m.hpa != nil, o
	case *policyv1.PodDisruptionBudget:
		dup, m.pdb = m.pdb != nil, o
	case *corev1.Secret:
		if file != secretExampleFile {
			return fmt.Errorf("%s: a Secret must not be a kustomization resource (keys do not belong in the repository); document it in %s", file, secretExampleFile)
		}
		dup, m.secret = m.secret != nil, o
	}
	if dup {
		return fmt.Errorf("%s: a second %T; the checks expect one", file, obj)
	}
	return nil
}

// container is the service's container of the Deployment, or nil.
func (m *manifests) container() *corev1.Container {
	for i := range m.deployment.Spec.Template.Spec.Containers {
		if c := &m.deployment.Spec.Template.Spec.Containers[i]; c.Name == containerName {
			return c
		}
	}
	return nil
}

// problems collects every finding of a check, so one run names them all.
type problems []error

func (p *problems) addf(format string, args ...any) { *p = append(*p, fmt.Errorf(format, args...)) }

func (p problems) err() error { return errors.Join(p...) }

// checkManifests runs every check on m; nil means the manifests agree with the code.
func checkManifests(m *manifests) error {
	if m.container() == nil {
		return fmt.Errorf("deployment.yaml: no container named %q", containerName)
	}
	return errors.Join(
		checkContainerPort(m),
		checkProbes(m),
		checkPrometheusAnnotations(m),
		checkEnvNames(m),
		checkEffectiveConfig(m),
		checkSecretRefs(m),
		checkTermination(m),
		checkSecurityContext(m),
		checkResources(m),
		checkImage(m),
		checkSelectors(m),
		checkService(m),
		checkHPA(m),
		checkPDB(m),
	)
}

// checkKustomizationCoversDirectory: every manifest file in the directory is applied, except
// the Secret example, so a new manifest is not silently left out of `kubectl apply -k`.
func checkKustomizationCoversDirectory(m *manifests) error {
	var p problems
	files, err := filepath.Glob(filepath.Join(m.dir, "*.yaml"))
	if err != nil {
		return err
	}
	for _, f := range files {
		base := filepath.Base(f)
		if base == "kustomization.yaml" || base == secretExampleFile {
			continue
		}
		if !slices.Contains(m.kustomization.Resources, base) {
			p.addf("kustomization.yaml: %s is not listed in resources", base)
		}
	}
	if slices.Contains(m.kustomization.Resources, secretExampleFile) {
		p.addf("kustomization.yaml: %s must not be a resource", secretExampleFile)
	}
	return p.err()
}

// resolvePort returns the container port number a probe or Service port refers to (by name
// or number), or 0.
func resolvePort(c *corev1.Container, port intstr.IntOrString) int32 {
	for _, cp := range c.Ports {
		if (port.Type == intstr.String && cp.Name == port.StrVal) || (port.Type == intstr.Int && cp.ContainerPort == port.IntVal) {
			return cp.ContainerPort
		}
	}
	return 0
}

// servicePort is the container's port named "http".
func servicePort(c *corev1.Container) (corev1.ContainerPort, bool) {
	for _, cp := range c.Ports {
		if cp.Name == "http" {
			return cp, true
		}
	}
	return corev1.ContainerPort{}, false
}

// checkContainerPort: the container declares the port the service listens on. The image
// (EXPOSE, HEALTHCHECK), compose and the Service all assume the default PORT, so the
// container port must be that default and the ConfigMap must not move it.
func checkContainerPort(m *manifests) error {
	var p problems
	def, _ := config.FromMap(map[string]string{})
	cp, ok := servicePort(m.container())
	if !ok {
		return errors.New("deployment.yaml: container has no port named http")
	}
	if int(cp.ContainerPort) != def.Port {
		p.addf("deployment.yaml: containerPort %d is not the service's default PORT %d", cp.ContainerPort, def.Port)
	}
	if v, set := m.configMap.Data[config.Prefix+"PORT"]; set && v != fmt.Sprint(cp.ContainerPort) {
		p.addf("configmap.yaml: %sPORT=%s but the container port is %d", config.Prefix, v, cp.ContainerPort)
	}
	return p.err()
}

// checkProbes: liveness and readiness probe the server's own routes on the service port.
func checkProbes(m *manifests) error {
	var p problems
	c := m.container()
	cp, _ := servicePort(c)
	for _, probe := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"livenessProbe", c.LivenessProbe, server.PathHealthz},
		{"readinessProbe", c.ReadinessProbe, server.PathReadyz},
	} {
		if probe.probe == nil || probe.probe.HTTPGet == nil {
			p.addf("deployment.yaml: %s must be an httpGet probe of %s", probe.name, probe.path)
			continue
		}
		get := probe.probe.HTTPGet
		if get.Path != probe.path {
			p.addf("deployment.yaml: %s path %q is not the server's route %q", probe.name, get.Path, probe.path)
		}
		if port := resolvePort(c, get.Port); port == 0 || port != cp.ContainerPort {
			p.addf("deployment.yaml: %s port %s is not the service port %d", probe.name, get.Port.String(), cp.ContainerPort)
		}
		if get.Scheme != "" && get.Scheme != corev1.URISchemeHTTP {
			p.addf("deployment.yaml: %s scheme %s: the service serves plain HTTP", probe.name, get.Scheme)
		}
	}
	if c.StartupProbe != nil && c.StartupProbe.HTTPGet != nil && c.StartupProbe.HTTPGet.Path != server.PathHealthz {
		p.addf("deployment.yaml: startupProbe path %q is not %q", c.StartupProbe.HTTPGet.Path, server.PathHealthz)
	}
	return p.err()
}

// checkPrometheusAnnotations: the scrape annotations point at the metrics route and port.
func checkPrometheusAnnotations(m *manifests) error {
	var p problems
	a := m.deployment.Spec.Template.Annotations
	cp, _ := servicePort(m.container())
	want := map[string]string{
		"prometheus.io/scrape": "true",
		"prometheus.io/port":   fmt.Sprint(cp.ContainerPort),
		"prometheus.io/path":   server.PathMetrics,
	}
	for _, k := range []string{"prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path"} {
		if a[k] != want[k] {
			p.addf("deployment.yaml: pod annotation %s=%q, want %q", k, a[k], want[k])
		}
	}
	return p.err()
}

// checkEnvNames: every variable the ConfigMap and the container set is one the service reads.
// A misspelt name is otherwise silently ignored and the default applies.
func checkEnvNames(m *manifests) error {
	var p problems
	known := configVarNames()
	for _, k := range sortedKeys(keysOf(m.configMap.Data)) {
		if !strings.HasPrefix(k, config.Prefix) {
			p.addf("configmap.yaml: %s is loaded with envFrom but has no %s prefix", k, config.Prefix)
			continue
		}
		if err := checkVarName(known, "configmap.yaml", k); err != nil {
			p = append(p, err)
		}
	}
	c := m.container()
	for _, e := range c.Env {
		if err := checkVarName(known, "deployment.yaml env", e.Name); err != nil {
			p = append(p, err)
		}
	}
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil && from.ConfigMapRef.Name == m.configMap.Name:
		case from.ConfigMapRef != nil:
			p.addf("deployment.yaml: envFrom ConfigMap %q is not %q from configmap.yaml", from.ConfigMapRef.Name, m.configMap.Name)
		default:
			p.addf("deployment.yaml: envFrom other than the ConfigMap: its names cannot be checked")
		}
		if from.Prefix != "" {
			p.addf("deployment.yaml: envFrom prefix %q changes every variable name", from.Prefix)
		}
	}
	if !slices.ContainsFunc(c.EnvFrom, func(f corev1.EnvFromSource) bool { return f.ConfigMapRef != nil }) {
		p.addf("deployment.yaml: the container does not load ConfigMap %q (envFrom)", m.configMap.Name)
	}
	return p.err()
}

func keysOf(m map[string]string) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

// effectiveVars is the environment the container gets: ConfigMap, then the container's env
// (which wins), with a production-grade stand-in for every value that comes from a Secret.
func effectiveVars(m *manifests) map[string]string {
	vars := map[string]string{}
	for k, v := range m.configMap.Data {
		vars[k] = v
	}
	for _, e := range m.container().Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			vars[e.Name] = strings.Repeat("s", 48)
		case e.ValueFrom == nil:
			vars[e.Name] = e.Value
		}
	}
	return vars
}

// checkEffectiveConfig: the values the pod gets pass the service's own validation (which in
// production also refuses `*` origins and weak keys), so a bad value fails here, not as a
// crash-looping rollout.
//
// A production pod must also cap its connections: the memory limit is sized for a number of
// them, and without a cap a busy pod is OOM-killed with every client at once instead of
// answering 503 to the next upgrade.
func checkEffectiveConfig(m *manifests) error {
	cfg, err := config.FromMap(effectiveVars(m))
	if err != nil {
		return fmt.Errorf("configmap.yaml + deployment.yaml env: the service would refuse this configuration: %w", err)
	}
	if cfg.Production() && cfg.MaxConnections == 0 {
		return fmt.Errorf("configmap.yaml: %sMAX_CONNECTIONS is unlimited; production pods are sized for a connection count", config.Prefix)
	}
	return nil
}

// checkSecretRefs: the JWT key comes from the Secret (never a literal or the ConfigMap), and
// every secretKeyRef names a key the documented Secret has.
func checkSecretRefs(m *manifests) error {
	var p problems
	const jwtVar = config.Prefix + "JWT_SECRET_KEY"
	if _, ok := m.configMap.Data[jwtVar]; ok {
		p.addf("configmap.yaml: %s is a secret; it belongs in the Secret", jwtVar)
	}
	keys := map[string]bool{}
	for k := range m.secret.Data {
		keys[k] = true
	}
	for k := range m.secret.StringData {
		keys[k] = true
	}
	var jwtFromSecret bool
	for _, e := range m.container().Env {
		if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			if e.Name == jwtVar {
				p.addf("deployment.yaml: %s is set literally; take it from Secret %q with secretKeyRef", jwtVar, m.secret.Name)
			}
			continue
		}
		ref := e.ValueFrom.SecretKeyRef
		if ref.Name != m.secret.Name {
			p.addf("deployment.yaml: %s refers to Secret %q, but %s documents %q", e.Name, ref.Name, secretExampleFile, m.secret.Name)
		}
		if !keys[ref.Key] {
			p.addf("deployment.yaml: %s refers to key %q, which %s does not have (keys: %v)", e.Name, ref.Key, secretExampleFile, sortedKeys(keys))
		}
		if e.Name == jwtVar {
			jwtFromSecret = true
			if ref.Optional != nil && *ref.Optional {
				p.addf("deployment.yaml: %s must not be optional: without it production refuses to start", jwtVar)
			}
		}
	}
	if !jwtFromSecret {
		p.addf("deployment.yaml: %s does not come from a secretKeyRef", jwtVar)
	}
	return p.err()
}

// checkTermination: the pod is given the time a drain needs on SIGTERM (docs/OPERATIONS.md
// "Lifecycle"). Kubernetes runs the
// preStop hook first and counts it against terminationGracePeriodSeconds; then the service
// drains over SHUTDOWN_DRAIN_TIMEOUT and needs shutdownMargin to exit. A shorter grace period
// means SIGKILL mid-drain: every remaining client drops at once, which is exactly the
// reconnect storm the drain exists to avoid. The hook must be the kubelet's sleep action:
// the distroless image has no shell for an exec hook. minReadySeconds spaces a rollout's
// pod terminations by at least one drain window.
func checkTermination(m *manifests) error {
	var p problems
	c := m.container()
	var preStop time.Duration
	switch {
	case c.Lifecycle == nil || c.Lifecycle.PreStop == nil:
		p.addf("deployment.yaml: no preStop hook; load balancers keep sending upgrades to a terminating pod")
	case c.Lifecycle.PreStop.Exec != nil:
		p.addf("deployment.yaml: preStop exec %v cannot run: the distroless image has no shell or sleep binary; use lifecycle.preStop.sleep", c.Lifecycle.PreStop.Exec.Command)
	case c.Lifecycle.PreStop.Sleep == nil || c.Lifecycle.PreStop.Sleep.Seconds <= 0:
		p.addf("deployment.yaml: preStop must be a sleep action of at least one second")
	default:
		preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	grace := 30 * time.Second // Kubernetes' default
	if g := m.deployment.Spec.Template.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	cfg, err := config.FromMap(effectiveVars(m))
	if err != nil {
		return errors.Join(append(p, fmt.Errorf("cannot read SHUTDOWN_DRAIN_TIMEOUT: %w", err))...)
	}
	drain := cfg.ShutdownDrainTimeout.D()
	if ready := time.Duration(m.deployment.Spec.MinReadySeconds) * time.Second; ready < drain {
		p.addf("deployment.yaml: minReadySeconds %v is shorter than SHUTDOWN_DRAIN_TIMEOUT %v: a rollout would drain several pods at once", ready, drain)
	}
	if need := preStop + drain + shutdownMargin; grace < need {
		p.addf("deployment.yaml: terminationGracePeriodSeconds %v is less than preStop %v + SHUTDOWN_DRAIN_TIMEOUT %v + %v to exit (= %v): the drain would be cut by SIGKILL",
			grace, preStop, drain, shutdownMargin, need)
	}
	return p.err()
}

// checkSecurityContext: the container runs as the image's non-root user, read-only, with no
// capabilities, no privilege escalation and the runtime's default seccomp profile.
func checkSecurityContext(m *manifests) error {
	var p problems
	pod := m.deployment.Spec.Template.Spec.SecurityContext
	if pod == nil {
		pod = &corev1.PodSecurityContext{}
	}
	sc := m.container().SecurityContext
	if sc == nil {
		return errors.New("deployment.yaml: the container has no securityContext")
	}
	if !orPod(sc.RunAsNonRoot, pod.RunAsNonRoot) {
		p.addf("deployment.yaml: runAsNonRoot is not true")
	}
	if uid := runAsUser(m); uid == nil || *uid == 0 {
		p.addf("deployment.yaml: runAsUser must be set to the image's non-root uid")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		p.addf("deployment.yaml: readOnlyRootFilesystem is not true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		p.addf("deployment.yaml: allowPrivilegeEscalation is not false")
	}
	if sc.Privileged != nil && *sc.Privileged {
		p.addf("deployment.yaml: privileged is true")
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		p.addf("deployment.yaml: capabilities do not drop ALL")
	} else if len(sc.Capabilities.Add) > 0 {
		p.addf("deployment.yaml: capabilities add %v; the service binds an unprivileged port and needs none", sc.Capabilities.Add)
	}
	seccomp := pod.SeccompProfile
	if sc.SeccompProfile != nil {
		seccomp = sc.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		p.addf("deployment.yaml: seccompProfile is not RuntimeDefault")
	}
	if a := m.deployment.Spec.Template.Spec.AutomountServiceAccountToken; a == nil || *a {
		p.addf("deployment.yaml: automountServiceAccountToken is not false; the service never calls the Kubernetes API")
	}
	return p.err()
}

// orPod is a container setting that falls back to the pod's.
func orPod(container, pod *bool) bool {
	if container != nil {
		return *container
	}
	return pod != nil && *pod
}

// runAsUser is the uid the container runs as (container setting over the pod's), or nil.
func runAsUser(m *manifests) *int64 {
	if sc := m.container().SecurityContext; sc != nil && sc.RunAsUser != nil {
		return sc.RunAsUser
	}
	if pod := m.deployment.Spec.Template.Spec.SecurityContext; pod != nil {
		return pod.RunAsUser
	}
	return nil
}

// checkResources: CPU and memory requests exist (the HPA's utilization targets are relative
// to them) and a memory limit bounds the pod (MAX_CONNECTIONS is sized against it).
func checkResources(m *manifests) error {
	var p problems
	r := m.container().Resources
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, ok := r.Requests[name]; !ok || q.IsZero() {
			p.addf("deployment.yaml: no %s request; the HPA's %s utilization target needs one", name, name)
		}
	}
	lim, ok := r.Limits[corev1.ResourceMemory]
	if !ok || lim.IsZero() {
		p.addf("deployment.yaml: no memory limit")
	} else if req, ok := r.Requests[corev1.ResourceMemory]; ok && lim.Cmp(req) < 0 {
		p.addf("deployment.yaml: memory limit %s is below the request %s", lim.String(), req.String())
	}
	if cpuLim, ok := r.Limits[corev1.ResourceCPU]; ok {
		if req, ok := r.Requests[corev1.ResourceCPU]; ok && cpuLim.Cmp(req) < 0 {
			p.addf("deployment.yaml: cpu limit %s is below the request %s", cpuLim.String(), req.String())
		}
	}
	return p.err()
}

// imageTag returns the tag (or digest) of an image reference, "" when it has none.
func imageTag(ref string) string {
	if _, digest, ok := strings.Cut(ref, "@"); ok {
		return digest
	}
	last := ref[strings.LastIndex(ref, "/")+1:]
	if _, tag, ok := strings.Cut(last, ":"); ok {
		return tag
	}
	return ""
}

// checkImage: the image is pinned to a version, in the Deployment and in any kustomize
// override: `latest` (or no tag) makes a rollback redeploy whatever was pushed last.
func checkImage(m *manifests) error {
	var p problems
	img := m.container().Image
	if tag := imageTag(img); tag == "" || tag == "latest" {
		p.addf("deployment.yaml: image %q is not pinned to a version", img)
	}
	name := strings.TrimSuffix(img, ":"+imageTag(img))
	for _, o := range m.kustomization.Images {
		if o.Name != name {
			p.addf("kustomization.yaml: images entry %q matches no container image (%q)", o.Name, name)
		}
		if o.NewTag == "latest" || (o.NewTag == "" && o.Digest == "" && o.NewName != "") {
			p.addf("kustomization.yaml: images entry %q is not pinned to a version", o.Name)
		}
	}
	return p.err()
}

// selectorMatches reports whether every matchLabels pair is among labels.
func selectorMatches(sel *metav1.LabelSelector, labels map[string]string) bool {
	if sel == nil || len(sel.MatchLabels) == 0 || len(sel.MatchExpressions) > 0 {
		return false
	}
	for k, v := range sel.MatchLabels {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// checkSelectors: the Deployment selects its own pods, and an HPA owns the replica count.
func checkSelectors(m *manifests) error {
	var p problems
	labels := m.deployment.Spec.Template.Labels
	if !selectorMatches(m.deployment.Spec.Selector, labels) {
		p.addf("deployment.yaml: selector %v does not match the pod labels %v", m.deployment.Spec.Selector, labels)
	}
	if m.deployment.Spec.Replicas != nil {
		p.addf("deployment.yaml: replicas is set; the HPA owns the count and every apply would reset it")
	}
	return p.err()
}

// checkService: the Service selects the pods and forwards to the service port.
func checkService(m *manifests) error {
	var p problems
	labels := m.deployment.Spec.Template.Labels
	if !selectorMatches(&metav1.LabelSelector{MatchLabels: m.service.Spec.Selector}, labels) {
		p.addf("service.yaml: selector %v does not match the pod labels %v", m.service.Spec.Selector, labels)
	}
	cp, _ := servicePort(m.container())
	if len(m.service.Spec.Ports) == 0 {
		p.addf("service.yaml: no ports")
	}
	for _, sp := range m.service.Spec.Ports {
		if port := resolvePort(m.container(), sp.TargetPort); port != cp.ContainerPort {
			p.addf("service.yaml: port %q targetPort %s does not reach the container port %d", sp.Name, sp.TargetPort.String(), cp.ContainerPort)
		}
		if sp.Port != cp.ContainerPort {
			p.addf("service.yaml: port %d differs from the service's port %d that clients and docs use", sp.Port, cp.ContainerPort)
		}
	}
	return p.err()
}

// checkHPA: the autoscaler targets the Deployment, scales on CPU and memory, keeps two pods,
// and scales down slowly: each removed pod sends its clients to reconnect elsewhere.
func checkHPA(m *manifests) error {
	var p problems
	h := m.hpa.Spec
	ref := h.ScaleTargetRef
	if ref.APIVersion != "apps/v1" || ref.Kind != "Deployment" || ref.Name != m.deployment.Name {
		p.addf("hpa.yaml: scaleTargetRef %s/%s %q is not the Deployment %q", ref.APIVersion, ref.Kind, ref.Name, m.deployment.Name)
	}
	if h.MinReplicas == nil || *h.MinReplicas < 2 {
		p.addf("hpa.yaml: minReplicas below 2 leaves no pod to reconnect to during a restart")
	}
	if h.MaxReplicas < 2 || (h.MinReplicas != nil && h.MaxReplicas < *h.MinReplicas) {
		p.addf("hpa.yaml: maxReplicas %d is below minReplicas", h.MaxReplicas)
	}
	resources := map[corev1.ResourceName]bool{}
	for _, ms := range h.Metrics {
		if ms.Type == autoscalingv2.ResourceMetricSourceType && ms.Resource != nil {
			resources[ms.Resource.Name] = true
		}
	}
	for _, want := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if !resources[want] {
			p.addf("hpa.yaml: no %s metric", want)
		}
	}
	down := (*autoscalingv2.HPAScalingRules)(nil)
	if h.Behavior != nil {
		down = h.Behavior.ScaleDown
	}
	if down == nil {
		p.addf("hpa.yaml: no behavior.scaleDown; the default may remove most pods at once and storm reconnects")
		return p.err()
	}
	if down.StabilizationWindowSeconds == nil || *down.StabilizationWindowSeconds < 300 {
		p.addf("hpa.yaml: behavior.scaleDown.stabilizationWindowSeconds must be at least 300")
	}
	if len(down.Policies) == 0 {
		p.addf("hpa.yaml: behavior.scaleDown has no policies")
	}
	for _, pol := range down.Policies {
		slow := pol.PeriodSeconds >= 60 &&
			((pol.Type == autoscalingv2.PodsScalingPolicy && pol.Value <= 2) ||
				(pol.Type == autoscalingv2.PercentScalingPolicy && pol.Value <= 25))
		if !slow {
			p.addf("hpa.yaml: scaleDown policy %s %d per %ds is not slow (at most 2 pods or 25%% per 60 s or longer)", pol.Type, pol.Value, pol.PeriodSeconds)
		}
	}
	return p.err()
}

// checkPDB: the budget covers the pods and still lets a node drain proceed.
func checkPDB(m *manifests) error {
	var p problems
	if !selectorMatches(m.pdb.Spec.Selector, m.deployment.Spec.Template.Labels) {
		p.addf("pdb.yaml: selector does not match the pod labels")
	}
	switch {
	case m.pdb.Spec.MaxUnavailable != nil:
	case m.pdb.Spec.MinAvailable != nil && m.hpa.Spec.MinReplicas != nil &&
		m.pdb.Spec.MinAvailable.Type == intstr.Int && m.pdb.Spec.MinAvailable.IntVal >= *m.hpa.Spec.MinReplicas:
		p.addf("pdb.yaml: minAvailable %d with minReplicas %d blocks every node drain", m.pdb.Spec.MinAvailable.IntVal, *m.hpa.Spec.MinReplicas)
	case m.pdb.Spec.MinAvailable == nil:
		p.addf("pdb.yaml: neither maxUnavailable nor minAvailable is set")
	}
	return p.err()
}

// describe lists the findings one per line for a test failure.
func describe(err error) string {
	lines := flatten(err)
	sort.Strings(lines)
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString("\n  - " + l)
	}
	return b.String()
}

// flatten returns the messages of the leaves of a tree of errors.Join errors.
func flatten(err error) []string {
	if err == nil {
		return nil
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []string{err.Error()}
	}
	var out []string
	for _, e := range j.Unwrap() {
		out = append(out, flatten(e)...)
	}
	return out
}
