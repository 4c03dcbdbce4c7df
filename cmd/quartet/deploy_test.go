package main

import (
	"bufio"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The deployment files are exercised without a container engine or
// systemd on this machine: the Dockerfile's build line is run as written
// and must give a static binary; the example configuration must load; the
// units must say what the code relies on. (Socket activation and sd_notify
// themselves are TestSocketActivationAndNotify.)

func TestDockerfileBuildsAStaticBinary(t *testing.T) {
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
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("the binary needs a dynamic loader: it would not run in an empty image")
		}
	}
	if v, err := exec.Command(out, "version").Output(); err != nil || !strings.HasPrefix(string(v), "quartet v9.9.9 (commit d0cker") {
		t.Fatalf("version: %q %v", v, err)
	}
	for _, want := range []string{"FROM scratch", "USER 65532:65532", `"--addr", "0.0.0.0:8080"`, `"--metrics-addr", "0.0.0.0:9090"`, "--bench-endpoints=false"} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
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
