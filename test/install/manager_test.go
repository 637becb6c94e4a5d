package install

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The two roles' ports and arguments: every pod serves metrics and probes;
// only the receiver's serves callbacks.
var rolePorts = map[string]map[string]int32{
	"receiver":    {"receiver": 8080, "metrics": 8443, "health": 8081},
	"controllers": {"metrics": 8443, "health": 8081},
}

// checkManagerPod checks what every install must give a role's pods: the
// restricted pod security settings, the probes on the health port, --role
// and the ports the Services point at, and no port of the other role.
func checkManagerPod(t *testing.T, d *appsv1.Deployment, role string) corev1.Container {
	t.Helper()
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 || pod.Containers[0].Name != "manager" {
		t.Fatalf("the pod should run exactly one container named manager, has %d", len(pod.Containers))
	}
	c := pod.Containers[0]

	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Errorf("pod securityContext.runAsNonRoot should be true, got %+v", psc)
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext.seccompProfile should be RuntimeDefault, got %+v", psc)
	}
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Errorf("the manager container has no securityContext")
	default:
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("readOnlyRootFilesystem should be true")
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("allowPrivilegeEscalation should be false")
		}
		if sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) != 0 {
			t.Errorf("capabilities should drop ALL and add none, got %+v", sc.Capabilities)
		}
	}
	if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("the manager should have memory requests and limits, got %+v", c.Resources)
	}
	checkMemoryLimit(t, c)

	want := rolePorts[role]
	if len(c.Ports) != len(want) {
		t.Errorf("the %s pod has ports %+v, want only %v", role, c.Ports, want)
	}
	for name, port := range want {
		if got := containerPort(c, name); got != port {
			t.Errorf("container port %q = %d, want %d", name, got, port)
		}
	}
	args := []string{"--role=" + role, "--metrics-bind-address=:8443", "--health-probe-bind-address=:8081"}
	if role == "receiver" {
		args = append(args, "--receiver-bind-address=:8080")
		for _, a := range c.Args {
			if strings.HasPrefix(a, "--leader-elect") {
				t.Errorf("the receiver elects no leader, but has %s", a)
			}
		}
	}
	for _, arg := range args {
		if !hasArg(c.Args, arg) {
			t.Errorf("args %q lack %s", c.Args, arg)
		}
	}
	checkProbe(t, "liveness", c.LivenessProbe, "/healthz")
	checkProbe(t, "readiness", c.ReadinessProbe, "/readyz")
	return c
}

func checkProbe(t *testing.T, kind string, p *corev1.Probe, path string) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("no HTTP %s probe", kind)
		return
	}
	if p.HTTPGet.Path != path || p.HTTPGet.Port != intstr.FromString("health") {
		t.Errorf("%s probe gets %s on port %s, want %s on port health", kind, p.HTTPGet.Path, p.HTTPGet.Port.String(), path)
	}
}

// checkServiceReaches checks that a Service selects the pods of the
// Deployments given and of no other, and forwards its one port to the named
// container port.
func checkServiceReaches(t *testing.T, svc *corev1.Service, all []*appsv1.Deployment, reaches []*appsv1.Deployment, targetPort string, port int32) {
	t.Helper()
	for _, d := range all {
		selected := len(svc.Spec.Selector) > 0 && labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels))
		want := false
		for _, r := range reaches {
			want = want || r == d
		}
		if selected != want {
			t.Errorf("Service %s selector %v selects Deployment %s's pods (labels %v): %v, want %v", svc.Name, svc.Spec.Selector, d.Name, d.Spec.Template.Labels, selected, want)
		}
	}
	if len(svc.Spec.Ports) != 1 {
		t.Fatalf("Service %s has %d ports, want 1", svc.Name, len(svc.Spec.Ports))
	}
	p := svc.Spec.Ports[0]
	if p.Port != port || p.TargetPort != intstr.FromString(targetPort) {
		t.Errorf("Service %s forwards port %d to %s, want %d to %s", svc.Name, p.Port, p.TargetPort.String(), port, targetPort)
	}
}

// checkMemoryLimit checks that the container passes its own memory limit
// to the manager once, through the downward API, as MEMORY_LIMIT (from
// which main.go sets GOMEMLIMIT to 90% of it), and sets no GOMEMLIMIT
// itself: a GOMEMLIMIT of the whole limit would leave the Go runtime no
// headroom below it, and the manager keeps a GOMEMLIMIT it finds.
func checkMemoryLimit(t *testing.T, c corev1.Container) {
	t.Helper()
	var found []corev1.EnvVar
	for _, e := range c.Env {
		switch e.Name {
		case "MEMORY_LIMIT":
			found = append(found, e)
		case "GOMEMLIMIT":
			t.Errorf("GOMEMLIMIT is set (%+v): the manager would take it as is, without headroom below the limit", e)
		}
	}
	if len(found) != 1 {
		t.Errorf("MEMORY_LIMIT is set %d times, want once: %+v", len(found), c.Env)
		return
	}
	ref := found[0].ValueFrom
	if ref == nil || ref.ResourceFieldRef == nil || ref.ResourceFieldRef.Resource != "limits.memory" ||
		(ref.ResourceFieldRef.ContainerName != "" && ref.ResourceFieldRef.ContainerName != c.Name) ||
		(ref.ResourceFieldRef.Divisor.Cmp(resource.MustParse("1")) != 0 && !ref.ResourceFieldRef.Divisor.IsZero()) {
		t.Errorf("MEMORY_LIMIT = %+v, want the container's limits.memory in bytes through resourceFieldRef", found[0])
	}
}

// checkResources checks a default install's requests. CPU: the receiver is
// latency-bound, so well above the 10m an idle process needs. Memory: the
// controllers' request near their measured steady use (about 190 MiB with
// 50,000 finished FriendDeletions retained; README: Performance), the
// receiver's lower (57 MiB peak measured), both under their limits.
func checkResources(t *testing.T, c corev1.Container, role string) {
	t.Helper()
	if min := resource.MustParse("100m"); c.Resources.Requests.Cpu().Cmp(min) < 0 {
		t.Errorf("%s requests %s CPU, want at least %s", role, c.Resources.Requests.Cpu(), &min)
	}
	req, limit := c.Resources.Requests.Memory(), c.Resources.Limits.Memory()
	lo, hi := resource.MustParse("160Mi"), resource.MustParse("224Mi")
	if role == "receiver" {
		lo, hi = resource.MustParse("64Mi"), resource.MustParse("128Mi")
	}
	if req.Cmp(lo) < 0 || req.Cmp(hi) > 0 {
		t.Errorf("%s requests %s memory, want %s to %s", role, req, &lo, &hi)
	}
	if limit.Cmp(*req) < 0 {
		t.Errorf("%s memory limit %s is below its request %s", role, limit, req)
	}
}

// spoolMount is where the chart and the bundle mount the receiver's spool.
const spoolMount = "/var/spool/friend-deletion-operator"

// checkSpool checks that the manager pod keeps the receiver's spool on a
// volume of its own: --receiver-spool-dir names the mount of an emptyDir
// with a size limit or, when claims are given, of one of those claim
// templates; and that the grace period covers the receiver's shutdown delay
// (5 s), a last spool replay (5 s) and the manager's own 30 s bound.
func checkSpool(t *testing.T, pod corev1.PodSpec, c corev1.Container, claims []corev1.PersistentVolumeClaim) {
	t.Helper()
	if !hasArg(c.Args, "--receiver-spool-dir="+spoolMount) {
		t.Errorf("args %q lack --receiver-spool-dir=%s", c.Args, spoolMount)
	}
	var volume string
	for _, m := range c.VolumeMounts {
		if m.MountPath == spoolMount && !m.ReadOnly {
			volume = m.Name
		}
	}
	if volume == "" {
		t.Fatalf("nothing is mounted writable at %s: %+v", spoolMount, c.VolumeMounts)
	}
	var claimed bool
	for _, pvc := range claims {
		claimed = claimed || pvc.Name == volume
	}
	var emptyDir *corev1.EmptyDirVolumeSource
	for _, v := range pod.Volumes {
		if v.Name == volume {
			emptyDir = v.EmptyDir
		}
	}
	switch {
	case claims != nil && !claimed:
		t.Errorf("the spool volume %q is no claim template", volume)
	case claims != nil && emptyDir != nil:
		t.Errorf("the spool volume %q is an emptyDir besides a claim template", volume)
	case claims == nil && (emptyDir == nil || emptyDir.SizeLimit == nil || emptyDir.SizeLimit.Cmp(resource.MustParse("128Mi")) < 0):
		t.Errorf("the spool volume %q should be an emptyDir of at least twice the 64 MiB spool, got %+v", volume, emptyDir)
	}
	if g := pod.TerminationGracePeriodSeconds; g == nil || *g < 40 {
		t.Errorf("terminationGracePeriodSeconds = %v, want at least 40", g)
	}
}
