package systemd

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

type mapEnv map[string]string

func (m mapEnv) Getenv(k string) string  { return m[k] }
func (m mapEnv) Unsetenv(k string) error { delete(m, k); return nil }

func TestListenersIgnoresOtherProcessesAndBadCounts(t *testing.T) {
	tests := []struct {
		name    string
		env     mapEnv
		wantErr bool
	}{
		{"not activated", mapEnv{}, false},
		{"another process's sockets", mapEnv{"LISTEN_PID": "1", "LISTEN_FDS": "1"}, false},
		{"bad count", mapEnv{"LISTEN_PID": strconv.Itoa(os.Getpid()), "LISTEN_FDS": "many"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lns, _, err := Listeners(tt.env)
			if (err != nil) != tt.wantErr || len(lns) != 0 {
				t.Fatalf("Listeners: %v %v", lns, err)
			}
			if len(tt.env) != 0 {
				t.Fatalf("variables left for a child: %v", tt.env)
			}
		})
	}
}

func TestNotifySendsOneDatagram(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	env := mapEnv{"NOTIFY_SOCKET": path}
	n := NewNotifier(env)
	if _, ok := env["NOTIFY_SOCKET"]; ok {
		t.Fatal("NOTIFY_SOCKET left for a child")
	}
	if err := n.Notify("READY=1", "STATUS=serving"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	k, err := sock.Read(buf)
	if err != nil || string(buf[:k]) != "READY=1\nSTATUS=serving" {
		t.Fatalf("got %q, %v", buf[:k], err)
	}
	if err := NewNotifier(mapEnv{}).Notify("READY=1"); err != nil {
		t.Fatalf("outside systemd: %v", err)
	}
	if err := NewNotifier(mapEnv{"NOTIFY_SOCKET": filepath.Join(t.TempDir(), "gone")}).Notify("READY=1"); err == nil {
		t.Fatal("no error for a socket that is not there")
	}
}
