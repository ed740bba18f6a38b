package packaging

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// checkHardened asserts what every render must hold, whatever the values:
// docs/deploy.md's security context, mounts, token handling, probes and wiring.
func checkHardened(t *testing.T, m manifests) {
	t.Helper()
	ds := m.daemonSet
	pod := ds.Spec.Template.Spec

	if sel, err := metav1LabelSelector(ds); err != nil || !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("DaemonSet selector %v does not match its pod labels %v (%v)", ds.Spec.Selector, ds.Spec.Template.Labels, err)
	}
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType {
		t.Errorf("updateStrategy %q, want RollingUpdate", ds.Spec.UpdateStrategy.Type)
	}

	// Pod security.
	psc := pod.SecurityContext
	if psc == nil {
		t.Fatal("no pod securityContext")
	}
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("pod runAsNonRoot is not true")
	}
	if psc.RunAsUser == nil || *psc.RunAsUser != agentUID {
		t.Errorf("pod runAsUser %v, want %d", psc.RunAsUser, agentUID)
	}
	if psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod seccompProfile %+v, want RuntimeDefault", psc.SeccompProfile)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("pod automountServiceAccountToken is not false")
	}
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		t.Errorf("pod shares host namespaces: network=%v pid=%v ipc=%v", pod.HostNetwork, pod.HostPID, pod.HostIPC)
	}
	if m.serviceAccount != nil {
		if pod.ServiceAccountName != m.serviceAccount.Name {
			t.Errorf("serviceAccountName %q, the chart's ServiceAccount is %q", pod.ServiceAccountName, m.serviceAccount.Name)
		}
		if m.serviceAccount.AutomountServiceAccountToken == nil || *m.serviceAccount.AutomountServiceAccountToken {
			t.Error("ServiceAccount automountServiceAccountToken is not false")
		}
	}

	// Container security.
	c := agentContainer(t, m)
	checkContainerHardened(t, "agent", c.SecurityContext)
	if c.Resources.Limits.Memory().IsZero() {
		t.Error("agent has no memory limit")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Errorf("agent resources requests %v: want cpu and memory", c.Resources.Requests)
	}

	// Docker socket: hostPath of type Socket at the path the agent dials.
	sock := volumeFor(t, pod, c, "/var/run/docker.sock")
	if sock.HostPath == nil || sock.HostPath.Type == nil || *sock.HostPath.Type != corev1.HostPathSocket {
		t.Errorf("docker socket volume %s: want hostPath type Socket", volJSON(sock))
	}
	// Host /proc: read-only, announced through HOST_PROC.
	if mount := mountAt(c, "/host/proc"); mount == nil || !mount.ReadOnly {
		t.Errorf("/host/proc mount %+v: want a read-only mount", mount)
	} else if v := volumeNamed(pod, mount.Name); v == nil || v.HostPath == nil || v.HostPath.Path != "/proc" {
		t.Errorf("/host/proc volume %+v: want hostPath /proc", v)
	}
	if got := m.configMap.Data["HOST_PROC"]; got != "/host/proc" {
		t.Errorf("HOST_PROC %q, want /host/proc", got)
	}
	// Each volume root: a hostPath mounted read-write at the identical path,
	// or the agent cannot see bind sources where Docker does.
	roots := strings.Split(m.configMap.Data["VOLUME_ROOTS"], ",")
	for _, root := range roots {
		mount := mountAt(c, root)
		if mount == nil || mount.ReadOnly || mount.SubPath != "" {
			t.Errorf("volume root %s: agent mount %+v, want it read-write at the identical path", root, mount)
			continue
		}
		v := volumeNamed(pod, mount.Name)
		if v == nil || v.HostPath == nil || v.HostPath.Path != root || v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectoryOrCreate {
			t.Errorf("volume root %s: volume %s, want hostPath %s (DirectoryOrCreate)", root, volJSON(v), root)
		}
	}
	// Init containers: root only to chown, with CHOWN alone.
	for _, ic := range pod.InitContainers {
		sc := ic.SecurityContext
		if sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") ||
			!slices.Equal(sc.Capabilities.Add, []corev1.Capability{"CHOWN"}) {
			t.Errorf("init container %s security %+v: want drop ALL, add only CHOWN", ic.Name, sc)
			continue
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("init container %s %+v: want no privilege escalation and a read-only root", ic.Name, sc)
		}
	}
	if ic := initContainer(pod, "volume-roots-permissions"); ic != nil {
		var want []string
		for _, root := range roots {
			want = append(want, fmt.Sprintf("chown 0:0 '%s' && chmod 0700 '%s' && chown %d:%d '%s'", root, root, agentUID, agentUID, root))
			if mountAt(ic, root) == nil {
				t.Errorf("init container does not mount the volume root %s", root)
			}
		}
		// With CHOWN alone, chmod must run while root owns the directory.
		if cmd := ic.Command[len(ic.Command)-1]; cmd != strings.Join(want, " && ") {
			t.Errorf("volume-roots-permissions runs %q, want %q", cmd, strings.Join(want, " && "))
		}
		if len(ic.VolumeMounts) != len(roots) {
			t.Errorf("volume-roots-permissions mounts %+v, want only the roots", ic.VolumeMounts)
		}
	}
	for _, mount := range c.VolumeMounts {
		v := volumeNamed(pod, mount.Name)
		if v == nil {
			t.Errorf("mount %s names no volume", mount.Name)
			continue
		}
		if v.Secret != nil && !mount.ReadOnly {
			t.Errorf("secret mount %s is writable", mount.MountPath)
		}
		if v.Secret != nil && mount.SubPath != "" {
			t.Errorf("secret mount %s uses subPath: the kubelet would never refresh a rotated token", mount.MountPath)
		}
	}

	// NODE_NAME from the downward API, and defined before anything that expands it.
	nodeName := findEnv(c, "NODE_NAME")
	if nodeName == nil || nodeName.ValueFrom == nil || nodeName.ValueFrom.FieldRef == nil ||
		nodeName.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("NODE_NAME %+v: want fieldRef spec.nodeName", nodeName)
	} else if c.Env[0].Name != "NODE_NAME" {
		t.Errorf("NODE_NAME is env entry %q; it must come first so later entries may use $(NODE_NAME)", c.Env[0].Name)
	}

	// No plain token anywhere: not as env values, not in the ConfigMap, and
	// every *_TOKEN_FILE points into a Secret volume.
	for _, ctr := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
		for _, e := range ctr.Env {
			if e.Name == "NODE_TOKEN" || e.Name == "ENROLLMENT_TOKEN" || e.Name == "ADMIN_TOKEN" {
				t.Errorf("container %s: env %s is set; tokens come only from files", ctr.Name, e.Name)
			}
		}
		for _, ef := range ctr.EnvFrom {
			if ef.SecretRef != nil {
				t.Errorf("container %s: envFrom Secret %s would turn secrets into env values", ctr.Name, ef.SecretRef.Name)
			}
		}
	}
	for k := range m.configMap.Data {
		if strings.Contains(k, "TOKEN") {
			t.Errorf("ConfigMap holds %s", k)
		}
	}
	files := 0
	for _, name := range []string{"NODE_TOKEN_FILE", "ENROLLMENT_TOKEN_FILE"} {
		if e := findEnv(c, name); e != nil {
			files++
			v := volumeFor(t, pod, c, expand(e.Value, "node-a"))
			if v.Secret == nil {
				t.Errorf("%s=%s is not in a Secret volume: %s", name, e.Value, volJSON(v))
			}
		}
	}
	if files != 1 {
		t.Errorf("%d token file variables, want exactly one of NODE_TOKEN_FILE, ENROLLMENT_TOKEN_FILE", files)
	}
	if ref := c.EnvFrom; len(ref) != 1 || ref[0].ConfigMapRef == nil || ref[0].ConfigMapRef.Name != m.configMap.Name {
		t.Errorf("envFrom %+v: want the chart's ConfigMap %s", ref, m.configMap.Name)
	}

	// Probes on the health port.
	port := namedPort(c, "health")
	if port == nil {
		t.Fatal("agent has no port named health")
	}
	if want := ":" + strconv.Itoa(int(port.ContainerPort)); m.configMap.Data["HEALTH_ADDR"] != want {
		t.Errorf("HEALTH_ADDR %q, want %q (the health port)", m.configMap.Data["HEALTH_ADDR"], want)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe %+v: want httpGet", p.name, p.probe)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != "health" {
			t.Errorf("%s probe GET %s on %s, want %s on health", p.name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path)
		}
	}
	if g := pod.TerminationGracePeriodSeconds; g == nil || *g <= 10 {
		t.Errorf("terminationGracePeriodSeconds %v: must exceed the agent's SHUTDOWN_TIMEOUT (10s)", g)
	}

	// Service and helm test pod.
	if m.service != nil {
		if m.service.Spec.ClusterIP != corev1.ClusterIPNone {
			t.Errorf("service clusterIP %q, want None (headless)", m.service.Spec.ClusterIP)
		}
		if !labels.SelectorFromSet(m.service.Spec.Selector).Matches(labels.Set(ds.Spec.Template.Labels)) {
			t.Errorf("service selector %v does not select the agent pods", m.service.Spec.Selector)
		}
		if len(m.service.Spec.Ports) != 1 || m.service.Spec.Ports[0].TargetPort.String() != "health" {
			t.Errorf("service ports %+v, want one targeting health", m.service.Spec.Ports)
		}
		if p, ok := m.service.Annotations["prometheus.io/port"]; ok && p != strconv.Itoa(int(port.ContainerPort)) {
			t.Errorf("service annotation prometheus.io/port %q, the health port is %d: Prometheus would scrape nothing", p, port.ContainerPort)
		}
	}
	if tp := m.testPod; tp != nil {
		if tp.Annotations["helm.sh/hook"] != "test" {
			t.Errorf("test pod hook %q, want test", tp.Annotations["helm.sh/hook"])
		}
		if sel, _ := metav1LabelSelector(ds); sel.Matches(labels.Set(tp.Labels)) {
			t.Errorf("test pod labels %v match the DaemonSet selector: the DaemonSet would adopt it", tp.Labels)
		}
		if m.service != nil && labels.SelectorFromSet(m.service.Spec.Selector).Matches(labels.Set(tp.Labels)) {
			t.Errorf("test pod labels %v match the Service selector", tp.Labels)
		}
		if len(tp.Spec.Containers) != 1 {
			t.Fatalf("test pod has %d containers", len(tp.Spec.Containers))
		}
		tc := tp.Spec.Containers[0]
		wantArgs := []string{"healthcheck", "-addr", m.service.Name + "." + releaseNS + ".svc:" + strconv.Itoa(int(port.ContainerPort))}
		if tc.Image != c.Image || !slices.Equal(tc.Args, wantArgs) {
			t.Errorf("test pod runs %s %v, want the agent image %s with %v", tc.Image, tc.Args, c.Image, wantArgs)
		}
		if tp.Spec.RestartPolicy != corev1.RestartPolicyNever {
			t.Errorf("test pod restartPolicy %q, want Never", tp.Spec.RestartPolicy)
		}
		checkContainerHardened(t, "test", tc.SecurityContext)
	}
}

func checkContainerHardened(t *testing.T, name string, sc *corev1.SecurityContext) {
	t.Helper()
	if sc == nil {
		t.Errorf("%s container has no securityContext", name)
		return
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s container: readOnlyRootFilesystem is not true", name)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s container: allowPrivilegeEscalation is not false", name)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("%s container is privileged", name)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) != 0 {
		t.Errorf("%s container capabilities %+v: want drop [ALL], add none", name, sc.Capabilities)
	}
}

// checkTokenFile asserts that variable names a file from key of Secret secret.
func checkTokenFile(t *testing.T, m manifests, variable, secret, key string) {
	t.Helper()
	c := agentContainer(t, m)
	e := findEnv(c, variable)
	if e == nil {
		t.Fatalf("no %s", variable)
	}
	pod := m.daemonSet.Spec.Template.Spec
	v := volumeFor(t, pod, c, e.Value)
	if v.Secret == nil || v.Secret.SecretName != secret {
		t.Fatalf("%s=%s: volume %+v, want Secret %s", variable, e.Value, v.VolumeSource, secret)
	}
	mount := mountFor(c, e.Value)
	rel := strings.TrimPrefix(e.Value, mount.MountPath+"/")
	found := false
	for _, item := range v.Secret.Items {
		if item.Path == rel {
			found = true
			if item.Key != key {
				t.Errorf("%s reads key %q of %s, want %q", variable, item.Key, secret, key)
			}
		}
	}
	if !found {
		t.Errorf("%s=%s: Secret %s projects no item at %q (items %+v)", variable, e.Value, secret, rel, v.Secret.Items)
	}
	if v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o007 != 0 {
		t.Errorf("Secret %s mode %v: others must not read it", secret, v.Secret.DefaultMode)
	}
}

func checkPerNode(t *testing.T, m manifests) {
	t.Helper()
	c := agentContainer(t, m)
	e := findEnv(c, "NODE_TOKEN_FILE")
	if e == nil || !strings.HasSuffix(e.Value, "/$(NODE_NAME)") {
		t.Fatalf("NODE_TOKEN_FILE %+v: want a path ending in /$(NODE_NAME)", e)
	}
	v := volumeFor(t, m.daemonSet.Spec.Template.Spec, c, expand(e.Value, "node-a"))
	if v.Secret == nil || v.Secret.SecretName != "fleet-tokens" {
		t.Fatalf("per-node tokens volume %s, want Secret fleet-tokens", volJSON(v))
	}
	if len(v.Secret.Items) != 0 {
		t.Errorf("per-node Secret projects items %+v: every node's key must be mounted", v.Secret.Items)
	}
	if findEnv(c, "ENROLLMENT_TOKEN_FILE") != nil {
		t.Error("per-node render sets ENROLLMENT_TOKEN_FILE")
	}
}

func checkEnrollment(t *testing.T, m manifests) {
	t.Helper()
	checkTokenFile(t, m, "ENROLLMENT_TOKEN_FILE", "fleet-enrollment", "enroll")
	c := agentContainer(t, m)
	pod := m.daemonSet.Spec.Template.Spec
	if findEnv(c, "NODE_TOKEN_FILE") != nil {
		t.Error("enrollment render sets NODE_TOKEN_FILE")
	}
	state := findEnv(c, "STATE_DIR")
	if state == nil {
		t.Fatal("enrollment render sets no STATE_DIR")
	}
	v := volumeFor(t, pod, c, state.Value)
	if v.HostPath == nil || v.HostPath.Path != "/srv/lormas-agent" ||
		v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectoryOrCreate {
		t.Errorf("STATE_DIR volume %s: want hostPath /srv/lormas-agent (DirectoryOrCreate), so the issued token survives restarts", volJSON(v))
	}
	if mount := mountFor(c, state.Value); mount.ReadOnly {
		t.Error("STATE_DIR is mounted read-only")
	}
	ic := initContainer(pod, "state-permissions")
	if ic == nil {
		t.Fatalf("init containers %+v: want a state-permissions one", pod.InitContainers)
	}
	sc := ic.SecurityContext
	if sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Fatalf("init container security %+v: want drop ALL", sc)
	}
	if add := sc.Capabilities.Add; !slices.Equal(add, []corev1.Capability{"CHOWN"}) {
		t.Errorf("init container adds %v, want only CHOWN", add)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("init container %+v: want no privilege escalation and a read-only root", sc)
	}
	if len(ic.VolumeMounts) != 1 || volumeNamed(pod, ic.VolumeMounts[0].Name) != v {
		t.Errorf("init container mounts %+v, want only the state volume", ic.VolumeMounts)
	}
	// With CHOWN alone, chmod must run while root owns the directory: after
	// the chown to the agent it would need FOWNER.
	if cmd := strings.Join(ic.Command, " "); !strings.HasSuffix(cmd, "chmod 0700 /state && chown 65532:65532 /state") {
		t.Errorf("init container runs %q, want chmod 0700 while root owns /state, then a chown to the agent's uid/gid", cmd)
	}
}

func checkCustom(t *testing.T, m manifests) {
	t.Helper()
	c := agentContainer(t, m)
	pod := m.daemonSet.Spec.Template.Spec
	if want := "registry.example/lormas/agent@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"; c.Image != want {
		t.Errorf("image %q, want %q", c.Image, want)
	}
	if got := c.Resources.Limits[corev1.ResourceMemory]; got.Cmp(resource.MustParse("512Mi")) != 0 {
		t.Errorf("memory limit %v, want 512Mi", got.String())
	}
	if got := c.Resources.Limits[corev1.ResourceCPU]; got.Cmp(resource.MustParse("1")) != 0 {
		t.Errorf("cpu limit %v, want 1", got.String())
	}
	if len(pod.Tolerations) != 1 || pod.Tolerations[0].Key != "dedicated" || pod.Tolerations[0].Effect != corev1.TaintEffectNoExecute {
		t.Errorf("tolerations %+v, want only the dedicated=lormas:NoExecute one", pod.Tolerations)
	}
	if pod.NodeSelector["lormas.io/docker"] != "true" {
		t.Errorf("nodeSelector %v lacks lormas.io/docker", pod.NodeSelector)
	}
	if pod.Affinity == nil || pod.Affinity.NodeAffinity == nil || pod.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		t.Errorf("affinity %+v not rendered", pod.Affinity)
	}
	if pod.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q", pod.PriorityClassName)
	}
	checkSupplementalGroups(t, m, 4000, 998)
	if v := volumeFor(t, pod, c, "/var/run/docker.sock"); v.HostPath.Path != "/run/docker.sock" {
		t.Errorf("socket hostPath %q, want /run/docker.sock", v.HostPath.Path)
	}
	if got := m.configMap.Data["SERVER_URL"]; got != "wss://lormas.internal:8443/base" {
		t.Errorf("SERVER_URL %q", got)
	}
	if got := m.configMap.Data["MAX_CONCURRENT_COMMANDS"]; got != "8" {
		t.Errorf("MAX_CONCURRENT_COMMANDS %q, want \"8\"", got)
	}
	for variable, secret := range map[string]string{
		"TLS_CA_FILE": "lormas-ca", "TLS_CERT_FILE": "lormas-client", "TLS_KEY_FILE": "lormas-client",
	} {
		e := findEnv(c, variable)
		if e == nil {
			t.Errorf("no %s", variable)
			continue
		}
		if v := volumeFor(t, pod, c, e.Value); v.Secret == nil || v.Secret.SecretName != secret {
			t.Errorf("%s=%s not from Secret %s: %s", variable, e.Value, secret, volJSON(v))
		}
	}
	checkTokenFile(t, m, "TLS_CA_FILE", "lormas-ca", "bundle.pem")
	if got := m.configMap.Data["VOLUME_ROOTS"]; got != "/srv/lormas/volumes,/data/volumes" {
		t.Errorf("VOLUME_ROOTS %q, want volumeRoots joined", got)
	}
	if initContainer(pod, "volume-roots-permissions") == nil {
		t.Error("no volume-roots-permissions init container")
	}
	if e := findEnv(c, "HTTPS_PROXY"); e == nil || e.Value != "http://proxy.internal:3128" {
		t.Errorf("HTTPS_PROXY %+v", e)
	}
}

func initContainer(pod corev1.PodSpec, name string) *corev1.Container {
	for i := range pod.InitContainers {
		if pod.InitContainers[i].Name == name {
			return &pod.InitContainers[i]
		}
	}
	return nil
}

func checkSupplementalGroups(t *testing.T, m manifests, want ...int64) {
	t.Helper()
	got := m.daemonSet.Spec.Template.Spec.SecurityContext.SupplementalGroups
	if !slices.Equal(got, want) {
		t.Errorf("supplementalGroups %v, want %v (the Docker socket's group)", got, want)
	}
}

func agentContainer(t *testing.T, m manifests) *corev1.Container {
	t.Helper()
	cs := m.daemonSet.Spec.Template.Spec.Containers
	if len(cs) != 1 || cs[0].Name != "agent" {
		t.Fatalf("containers %v, want one named agent", len(cs))
	}
	return &cs[0]
}

func findEnv(c *corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

func namedPort(c *corev1.Container, name string) *corev1.ContainerPort {
	for i := range c.Ports {
		if c.Ports[i].Name == name {
			return &c.Ports[i]
		}
	}
	return nil
}

func mountAt(c *corev1.Container, dir string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].MountPath == dir {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

// mountFor is the mount that holds file p: the longest mount path that is p
// or a parent of it.
func mountFor(c *corev1.Container, p string) *corev1.VolumeMount {
	var best *corev1.VolumeMount
	for i := range c.VolumeMounts {
		mp := c.VolumeMounts[i].MountPath
		if p == mp || strings.HasPrefix(p, strings.TrimSuffix(mp, "/")+"/") {
			if best == nil || len(mp) > len(best.MountPath) {
				best = &c.VolumeMounts[i]
			}
		}
	}
	return best
}

func volumeNamed(pod corev1.PodSpec, name string) *corev1.Volume {
	for i := range pod.Volumes {
		if pod.Volumes[i].Name == name {
			return &pod.Volumes[i]
		}
	}
	return nil
}

// volumeFor is the volume that holds file p in container c.
func volumeFor(t *testing.T, pod corev1.PodSpec, c *corev1.Container, p string) *corev1.Volume {
	t.Helper()
	mount := mountFor(c, path.Clean(p))
	if mount == nil {
		t.Fatalf("%s is on no volume mount of container %s", p, c.Name)
	}
	v := volumeNamed(pod, mount.Name)
	if v == nil {
		t.Fatalf("mount %s names no volume %q", mount.MountPath, mount.Name)
	}
	return v
}

// expand substitutes $(NODE_NAME) as the kubelet does.
func expand(s, nodeName string) string {
	return strings.ReplaceAll(s, "$(NODE_NAME)", nodeName)
}

func metav1LabelSelector(ds *appsv1.DaemonSet) (labels.Selector, error) {
	return metav1.LabelSelectorAsSelector(ds.Spec.Selector)
}

// volJSON shows a volume's source compactly (the API types omit empty fields).
func volJSON(v *corev1.Volume) string {
	b, _ := json.Marshal(v.VolumeSource)
	return string(b)
}
