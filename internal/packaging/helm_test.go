package packaging

import (
	"bytes"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const (
	chartDir       = "helm/lormas-agent"
	releaseName    = "lormas"
	releaseNS      = "lormas-system"
	goldenDefault  = "testdata/helm-default.golden.yaml"
	agentUID       = 65532
	defaultGroupID = 999
)

// manifests is a rendered chart, decoded strictly into Kubernetes API types.
type manifests struct {
	daemonSet      *appsv1.DaemonSet
	configMap      *corev1.ConfigMap
	service        *corev1.Service
	serviceAccount *corev1.ServiceAccount
	testPod        *corev1.Pod
}

// helmTemplate renders the chart with the given values files contents
// (written to temporary files, applied in order) and extra arguments.
func helmTemplate(t *testing.T, values []string, args ...string) result {
	t.Helper()
	helm := requireTool(t, "helm", "HELM")
	root := repoRoot(t)
	cmd := []string{"template", releaseName, filepath.Join(root, chartDir), "--namespace", releaseNS}
	for i, v := range values {
		p := filepath.Join(t.TempDir(), "values"+string(rune('a'+i))+".yaml")
		if err := os.WriteFile(p, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd = append(cmd, "--values", p)
	}
	cmd = append(cmd, args...)
	ctx, cancel := contextWithTimeout()
	defer cancel()
	return run(ctx, root, nil, helm, cmd...)
}

// render renders the chart and decodes every document strictly: an unknown or
// misspelt field, a duplicate key or a wrong type fails the test.
func render(t *testing.T, values ...string) (manifests, string) {
	t.Helper()
	r := helmTemplate(t, values)
	if r.err != nil {
		t.Fatalf("helm template: %s", r)
	}
	return decodeManifests(t, r.stdout), r.stdout
}

func decodeManifests(t *testing.T, rendered string) manifests {
	t.Helper()
	var m manifests
	for _, doc := range splitYAML(rendered) {
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("decode document header: %v\n%s", err, doc)
		}
		var target any
		switch meta.APIVersion + "/" + meta.Kind {
		case "apps/v1/DaemonSet":
			m.daemonSet = new(appsv1.DaemonSet)
			target = m.daemonSet
		case "v1/ConfigMap":
			m.configMap = new(corev1.ConfigMap)
			target = m.configMap
		case "v1/Service":
			m.service = new(corev1.Service)
			target = m.service
		case "v1/ServiceAccount":
			m.serviceAccount = new(corev1.ServiceAccount)
			target = m.serviceAccount
		case "v1/Pod":
			m.testPod = new(corev1.Pod)
			target = m.testPod
		default:
			t.Fatalf("unexpected object %s %s in the render:\n%s", meta.APIVersion, meta.Kind, doc)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), target); err != nil {
			t.Fatalf("strict decode of %s: %v\n%s", meta.Kind, err, doc)
		}
	}
	if m.daemonSet == nil || m.configMap == nil {
		t.Fatalf("render lacks the DaemonSet or its ConfigMap:\n%s", rendered)
	}
	return m
}

// splitYAML splits a multi-document stream, dropping documents that hold
// only comments or whitespace.
func splitYAML(s string) []string {
	var docs []string
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(s, -1) {
		meaningful := false
		for _, line := range strings.Split(doc, "\n") {
			if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
				meaningful = true
				break
			}
		}
		if meaningful {
			docs = append(docs, doc)
		}
	}
	return docs
}

func TestHelmLint(t *testing.T) {
	helm := requireTool(t, "helm", "HELM")
	root := repoRoot(t)
	for name, values := range helmCases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "values.yaml")
			if err := os.WriteFile(p, []byte(values), 0o600); err != nil {
				t.Fatal(err)
			}
			r := mustRun(t, root, nil, helm, "lint", "--strict", filepath.Join(root, chartDir), "--values", p)
			if !strings.Contains(r.stdout, "0 chart(s) failed") {
				t.Errorf("helm lint did not pass cleanly:\n%s", r.stdout)
			}
		})
	}
}

// helmCases are the main value combinations: every one must lint, render and
// pass the hardening assertions.
var helmCases = map[string]string{
	"default": "",
	// One node token for a DaemonSet pinned to one node.
	"existing-secret": "token:\n  source: existingSecret\nnodeSelector:\n  kubernetes.io/hostname: node-a\n",
	"per-node":        "token:\n  source: perNode\n  perNode:\n    secretName: fleet-tokens\nvolumeRootsPermissions:\n  enabled: false\n",
	"enrollment": `token:
  source: enrollment
  enrollment:
    secretName: fleet-enrollment
    key: enroll
    stateHostPath: /srv/lormas-agent
docker:
  socketGroupId: 105
`,
	"custom": `server:
  url: wss://lormas.internal:8443/base
  tls:
    caSecret:
      name: lormas-ca
      key: bundle.pem
    clientCertSecret: lormas-client
image:
  repository: registry.example/lormas/agent
  digest: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
resources:
  requests:
    cpu: 100m
    memory: 64Mi
  limits:
    cpu: "1"
    memory: 512Mi
tolerations:
  - key: dedicated
    operator: Equal
    value: lormas
    effect: NoExecute
nodeSelector:
  lormas.io/docker: "true"
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions:
            - key: kubernetes.io/arch
              operator: In
              values: [amd64, arm64]
priorityClassName: system-node-critical
podSecurityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  fsGroup: 65532
  supplementalGroups: [4000]
  seccompProfile:
    type: RuntimeDefault
docker:
  socketGroupId: 998
  socketPath: /run/docker.sock
config:
  LOG_LEVEL: debug
  MAX_CONCURRENT_COMMANDS: 8
healthPort: 9100
volumeRoots:
  - /srv/lormas/volumes
  - /data/volumes
extraEnv:
  - name: HTTPS_PROXY
    value: http://proxy.internal:3128
`,
}

func TestHelmTemplate(t *testing.T) {
	for name, values := range helmCases {
		t.Run(name, func(t *testing.T) {
			m, _ := render(t, values)
			checkHardened(t, m)
			switch name {
			case "default":
				// Each node enrolls as its own node: one shared node token would
				// make the DaemonSet's agents replace each other (close 4000).
				checkTokenFile(t, m, "ENROLLMENT_TOKEN_FILE", "lormas-agent-enrollment", "token")
				checkSupplementalGroups(t, m, defaultGroupID)
				if m.testPod == nil {
					t.Fatal("default render has no helm test pod")
				}
				if got := m.configMap.Data["SERVER_URL"]; got != "wss://lormas.example.com" {
					t.Errorf("SERVER_URL %q, want the values default", got)
				}
				// Only nodes labelled as running Docker, and no taint tolerated:
				// not control planes, not containerd-only nodes.
				pod := m.daemonSet.Spec.Template.Spec
				if tol := pod.Tolerations; len(tol) != 0 {
					t.Errorf("tolerations %+v, want none by default", tol)
				}
				if want := map[string]string{"kubernetes.io/os": "linux", "lormas.io/docker": "true"}; !maps.Equal(pod.NodeSelector, want) {
					t.Errorf("nodeSelector %v, want %v", pod.NodeSelector, want)
				}
			case "existing-secret":
				checkTokenFile(t, m, "NODE_TOKEN_FILE", "lormas-agent-token", "token")
			case "per-node":
				checkPerNode(t, m)
				if n := len(m.daemonSet.Spec.Template.Spec.InitContainers); n != 0 {
					t.Errorf("%d init containers with volumeRootsPermissions disabled, want none", n)
				}
			case "enrollment":
				checkEnrollment(t, m)
				checkSupplementalGroups(t, m, 105)
			case "custom":
				checkCustom(t, m)
			}
		})
	}
}

func TestHelmGolden(t *testing.T) {
	_, rendered := render(t)
	path := filepath.Join(repoRoot(t), "internal/packaging", goldenDefault)
	if *update {
		if err := os.WriteFile(path, []byte(rendered), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote %s", goldenDefault)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("golden file: %v (create it with: go test ./internal/packaging -run TestHelmGolden -update)", err)
	}
	if !bytes.Equal([]byte(rendered), want) {
		t.Errorf("default render differs from %s (review, then rerun with -update):\n%s", goldenDefault, lineDiff(string(want), rendered))
	}
}

// TestHelmChecksum: the pods roll (their template changes) exactly when the
// agent's settings change.
func TestHelmChecksum(t *testing.T) {
	checksum := func(values ...string) string {
		m, _ := render(t, values...)
		sum := m.daemonSet.Spec.Template.Annotations["checksum/config"]
		if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(sum) {
			t.Fatalf("checksum/config %q is not a sha256", sum)
		}
		return sum
	}
	base := checksum()
	for name, values := range map[string]string{
		"log level":    "config:\n  LOG_LEVEL: debug\n",
		"server url":   "server:\n  url: wss://other.example.com\n",
		"new key":      "config:\n  HEARTBEAT_INTERVAL: 5s\n  OUTBOX_LIMIT: 10\n",
		"volume roots": "volumeRoots: [/srv/v]\n",
	} {
		if got := checksum(values); got == base {
			t.Errorf("%s changed, checksum/config stayed %s", name, got)
		}
	}
	if got := checksum("resources:\n  requests:\n    cpu: 1\n"); got != base {
		t.Errorf("resources changed the config checksum: %s, want %s", got, base)
	}
	if checksum() != base {
		t.Error("checksum is not stable across renders")
	}
}

// TestHelmRejects: values that would put a token into plain configuration, or
// that are misspelt, fail the render instead of being ignored.
func TestHelmRejects(t *testing.T) {
	for name, c := range map[string]struct{ values, want string }{
		"token in config":           {"config:\n  NODE_TOKEN: abc\n", "NODE_TOKEN"},
		"enrollment in config":      {"config:\n  ENROLLMENT_TOKEN: abc\n", "ENROLLMENT_TOKEN"},
		"token in extraEnv":         {"extraEnv:\n  - name: NODE_TOKEN\n    value: abc\n", "extraEnv"},
		"chart-managed setting":     {"config:\n  SERVER_URL: ws://x\n", "SERVER_URL"},
		"unknown top-level key":     {"imagee:\n  tag: x\n", "imagee"},
		"unknown token source":      {"token:\n  source: plain\n", "source"},
		"typo in token block":       {"token:\n  existingSecret:\n    nmae: x\n", "nmae"},
		"root user":                 {"podSecurityContext:\n  runAsUser: 0\n  runAsGroup: 0\n", "runAsUser"},
		"privileged container":      {"securityContext:\n  privileged: true\n", "privileged"},
		"server url with query":     {"server:\n  url: wss://x/?token=abc\n", "url"},
		"volume roots in config":    {"config:\n  VOLUME_ROOTS: /srv/v\n", "VOLUME_ROOTS"},
		"volume roots in env":       {"extraEnv:\n  - name: VOLUME_ROOTS\n    value: /srv/v\n", "volumeRoots"},
		"nested volume roots":       {"volumeRoots: [/srv/v, /srv/v/inner]\n", "nest"},
		"relative volume root":      {"volumeRoots: [srv/v]\n", "volumeRoots"},
		"volume root /":             {"volumeRoots: [/]\n", "volumeRoots"},
		"no volume root":            {"volumeRoots: []\n", "volumeRoots"},
		"state under a volume root": {"token:\n  source: enrollment\n  enrollment:\n    stateHostPath: /srv/v/lormas-agent\nvolumeRoots: [/srv/v]\n", "stateHostPath /srv/v/lormas-agent and volumeRoots /srv/v overlap"},
		"volume root in the state":  {"token:\n  source: enrollment\n  enrollment:\n    stateHostPath: /srv/state\nvolumeRoots: [/srv/state/v]\n", "overlap"},
	} {
		t.Run(name, func(t *testing.T) {
			r := helmTemplate(t, []string{c.values})
			if r.err == nil {
				t.Fatalf("helm template accepted %q:\n%s", c.values, r.stdout)
			}
			if !strings.Contains(r.stderr, c.want) {
				t.Errorf("error does not name %q:\n%s", c.want, r.stderr)
			}
		})
	}
	// A token from another Secret through valueFrom is not a plain value.
	m, _ := render(t, "extraEnv:\n  - name: HTTPS_PROXY\n    valueFrom:\n      secretKeyRef: {name: proxy, key: url}\n")
	if env := findEnv(agentContainer(t, m), "HTTPS_PROXY"); env == nil || env.ValueFrom == nil || env.ValueFrom.SecretKeyRef == nil {
		t.Errorf("extraEnv valueFrom not rendered: %+v", env)
	}
}

// lineDiff shows the first differing lines of two texts.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n  - %s\n  + %s\n", i+1, wl, gl)
			if shown++; shown == 10 {
				b.WriteString("...\n")
				break
			}
		}
	}
	return b.String()
}
