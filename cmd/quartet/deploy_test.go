package main

import (
	"bufio"
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The deployment files are exercised without a container engine or
// systemd on this machine: the Dockerfile's build line is run as written
// and must give a static binary, which must then serve as the image would
// run it; the example configuration must load; the units must say what
// the code relies on. (Socket activation and sd_notify themselves are
// TestSocketActivationAndNotify.)

func TestDockerfileBuildsAStaticBinary(t *testing.T) {
	bin, df := buildAsDockerfile(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("the binary needs a dynamic loader: it would not run in an empty image")
		}
	}
	if v, err := exec.Command(bin, "version").Output(); err != nil || !strings.HasPrefix(string(v), "quartet v9.9.9 (commit d0cker") {
		t.Fatalf("version: %q %v", v, err)
	}
	for _, want := range []string{"FROM scratch", "USER 65532:65532", `"--addr", "0.0.0.0:8080"`, `"--metrics-addr", "0.0.0.0:9090"`, "--bench-endpoints=false"} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}

// The image as `docker run` starts it, without a container engine: the
// binary the Dockerfile builds, alone in an empty root (no /etc, no /tmp,
// no home; a /proc and a /dev, as an engine mounts them), run with the
// image's ENTRYPOINT and CMD as its USER and as PID 1 of a PID namespace
// of its own. It must serve the sample site and the admin endpoints, keep
// the load-test endpoints off, and stop cleanly on SIGTERM, which is what
// `docker stop` sends.
func TestImageRunsInAnEmptyRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for unshare and chroot, as a container engine does")
	}
	if out, err := exec.Command("unshare", "--mount", "--pid", "--fork", "true").CombinedOutput(); err != nil {
		t.Skipf("unshare cannot make mount and PID namespaces here (a container without CAP_SYS_ADMIN?): %v %s", err, out)
	}
	bin, df := buildAsDockerfile(t)
	user := dockerfileLine(t, df, "USER")
	argv := append(dockerfileExecForm(t, df, "ENTRYPOINT"), dockerfileExecForm(t, df, "CMD")...)
	// Loopback ports of the system's choosing for the image's 8080 and
	// 9090 (what -p would publish); everything else as the image has it.
	replaced := 0
	for i, a := range argv {
		if a == "0.0.0.0:8080" || a == "0.0.0.0:9090" {
			argv[i] = "127.0.0.1:0"
			replaced++
		}
	}
	if replaced != 2 {
		t.Fatalf("ENTRYPOINT and CMD %q: want the addresses 0.0.0.0:8080 and 0.0.0.0:9090", argv)
	}

	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil { // the image's / is readable by its user
		t.Fatal(err)
	}
	for _, d := range []string{"proc", "dev"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	exe, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, argv[0]), exe, 0o755); err != nil {
		t.Fatal(err)
	}
	// unshare waits for its child ignoring SIGTERM, and --kill-child takes
	// the server down with it if the test dies; the server itself gets
	// SIGTERM from its process group.
	script := `mount -t proc proc "$0/proc" && mount --bind /dev "$0/dev" && exec chroot --userspec="$QUARTET_IMAGE_USER" "$0" "$@"`
	cmd := exec.Command("unshare", append([]string{"--mount", "--pid", "--fork", "--kill-child", "sh", "-c", script, root}, argv...)...)
	cmd.Env = append(os.Environ(), "QUARTET_IMAGE_USER="+user)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := startQuartet(t, cmd)

	if got := fetch(t, "GET", p.url+"/"); !strings.HasPrefix(got, "200 ") || !strings.Contains(got, "<title>Quartet</title>") {
		t.Errorf("GET /: %.80q, want the sample site", got)
	}
	if got := fetch(t, "GET", p.url+"/hello"); !strings.HasPrefix(got, "404 ") {
		t.Errorf("GET /hello: %.80q, want 404: the load-test endpoints are off in the image", got)
	}
	for path, want := range map[string]string{"/healthz": "200 ok", "/readyz": "200 ready", "/metrics": "200 # HELP"} {
		if got := fetch(t, "GET", p.admin+path); !strings.HasPrefix(got, want) {
			t.Errorf("GET %s: %.80q, want %q", path, got, want)
		}
	}
	server := childOf(t, cmd.Process.Pid)
	uid, gid, _ := strings.Cut(user, ":")
	status := readFile(t, fmt.Sprintf("/proc/%d/status", server))
	// Real, effective, saved and filesystem ids all the image's; and PID 1
	// in the namespace.
	for _, want := range []string{"Uid:" + strings.Repeat("\t"+uid, 4) + "\n", "Gid:" + strings.Repeat("\t"+gid, 4) + "\n", fmt.Sprintf("NSpid:\t%d\t1\n", server)} {
		if !strings.Contains(status, want) {
			t.Errorf("the server's /proc/%d/status lacks %q:\n%s", server, want, status)
		}
	}

	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0:\n%s", code, p.log)
	}
	p.waitLog(regexp.MustCompile(`msg="quartet stopped"`))
}

// buildAsDockerfile runs the Dockerfile's build line as written (with
// VERSION v9.9.9 and COMMIT d0cker) and returns the binary and the
// Dockerfile.
func buildAsDockerfile(t *testing.T) (bin, dockerfile string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	df := readFile(t, "../../Dockerfile")
	var build string
	for _, l := range strings.Split(df, "\n") {
		if strings.HasPrefix(l, "RUN CGO_ENABLED=0 go build") {
			build = strings.TrimPrefix(l, "RUN ")
		}
	}
	if build == "" {
		t.Fatal("no 'RUN CGO_ENABLED=0 go build' line in the Dockerfile")
	}
	out := filepath.Join(t.TempDir(), "quartet")
	build = strings.Replace(build, "/out/quartet", out, 1)
	cmd := exec.Command("sh", "-c", build)
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "VERSION=v9.9.9", "COMMIT=d0cker")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", build, err, b)
	}
	return out, df
}

// dockerfileLine is the argument of the Dockerfile's last instruction
// named instr.
func dockerfileLine(t *testing.T, df, instr string) string {
	t.Helper()
	var arg string
	for _, l := range strings.Split(df, "\n") {
		if rest, ok := strings.CutPrefix(l, instr+" "); ok {
			arg = strings.TrimSpace(rest)
		}
	}
	if arg == "" {
		t.Fatalf("no %s in the Dockerfile", instr)
	}
	return arg
}

// dockerfileExecForm is the JSON array of the Dockerfile's instr
// (ENTRYPOINT or CMD in exec form).
func dockerfileExecForm(t *testing.T, df, instr string) []string {
	t.Helper()
	var argv []string
	if err := json.Unmarshal([]byte(dockerfileLine(t, df, instr)), &argv); err != nil || len(argv) == 0 {
		t.Fatalf("%s: want the exec form, a JSON array of strings: %v", instr, err)
	}
	return argv
}

// childOf is the one child of process pid.
func childOf(t *testing.T, pid int) int {
	t.Helper()
	var child int
	s := strings.TrimSpace(readFile(t, fmt.Sprintf("/proc/%d/task/%d/children", pid, pid)))
	if _, err := fmt.Sscan(s, &child); err != nil || strings.Contains(s, " ") {
		t.Fatalf("children of %d: %q", pid, s)
	}
	return child
}

func TestExampleConfigLoads(t *testing.T) {
	o, given, err := loadOptions(nil, "../../deploy/quartet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := o.validate(given, "../../deploy/quartet.yaml"); err != nil {
		t.Fatal(err)
	}
	if o.root != "/srv/www" || o.accessLogFormat != "combinedio" || o.cfg.MaxBodyBytes != 64<<20 {
		t.Errorf("loaded %+v", o)
	}
	svc := units(t, "../../deploy/quartet.service")
	if svc["Type"] != "notify" || svc["ExecReload"] != "/bin/kill -HUP $MAINPID" || svc["KillSignal"] != "SIGTERM" {
		t.Errorf("service unit: %v", svc)
	}
	if !strings.HasSuffix(svc["ExecStart"], "quartet serve --config /etc/quartet/quartet.yaml") {
		t.Errorf("ExecStart %q", svc["ExecStart"])
	}
	stop, err := time.ParseDuration(svc["TimeoutStopSec"])
	if err != nil || stop <= o.cfg.ShutdownTimeout {
		t.Errorf("TimeoutStopSec %q must exceed shutdown-timeout %v, or systemd kills requests in flight", svc["TimeoutStopSec"], o.cfg.ShutdownTimeout)
	}
	if sock := units(t, "../../deploy/quartet.socket"); sock["ListenStream"] == "" {
		t.Errorf("socket unit: %v", sock)
	}
}

// units reads a systemd unit's key=value lines (the last of a key wins).
func units(t *testing.T, path string) map[string]string {
	t.Helper()
	m := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(readFile(t, path)))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") {
			m[k] = v
		}
	}
	return m
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
