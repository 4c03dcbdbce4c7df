package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigFileErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string // all must appear in the error
	}{
		{"unknown key", "readers: 2\nreaderz: 3\n", []string{`unknown key "readerz"`, "line 2"}},
		{"wrong type", "processors: many\n", []string{`key "processors"`, `value "many"`, "whole number"}},
		{"bad duration", "idle-timeout: forever\n", []string{`key "idle-timeout"`, `"forever"`, "duration"}},
		{"out of range", "writers: 0\n", []string{"writers = 0", "1..1024"}},
		{"negative", "max-conns: -5\n", []string{"max-conns = -5"}},
		{"twice", "readers: 1\nreaders: 2\n", []string{`"readers" given twice`}},
		{"not a mapping", "- readers\n", []string{"want a mapping"}},
		{"pprof alone", "pprof: true\n", []string{"pprof = true needs metrics-addr"}},
		{"admin alone", "admin: true\n", []string{"admin = true needs metrics-addr"}},
		{"processor bounds crossed", "processors-min: 8\nprocessors-max: 4\n", []string{"ProcessorsMin = 8", "at most ProcessorsMax (4)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "q.yaml")
			os.WriteFile(path, []byte(tt.yaml), 0o644)
			var stderr bytes.Buffer
			err := runServe(context.Background(), []string{"--config", path, "--addr", "127.0.0.1:0"}, io.Discard, &stderr)
			if err == nil {
				t.Fatal("bad config accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestServeRunsFromConfigFileAndFlagsWin(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f.txt"), []byte("from root"), 0o644)
	path := filepath.Join(dir, "q.yaml")
	os.WriteFile(path, []byte("addr: 127.0.0.1:1\nreaders: 1\nwriters: 1\nprocessors: 2\nroot: "+dir+"\nidle-timeout: 5s\n"), 0o644)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runServe(ctx, []string{"--config", path, "--addr", addr}, io.Discard, io.Discard) }()
	var body []byte
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/f.txt") // the flag's address, not the file's
		if err != nil {
			continue
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		break
	}
	if string(body) != "from root" {
		t.Fatalf("got %q from the configured root", body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop on cancel")
	}
}

// --admin puts /admin/ on the metrics listener, with the processor
// bounds given by the flags.
func TestServeAdmin(t *testing.T) {
	addr, admin := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runServe(ctx, []string{"--addr", addr, "--metrics-addr", admin, "--admin", "--rdma", "off",
			"--processors-min", "2", "--processors-max", "8", "--queue-wait-target", "250ms"}, io.Discard, io.Discard)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	var body []byte
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get("http://" + admin + "/admin/stages")
		if err != nil {
			continue
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		break
	}
	if !strings.Contains(string(body), "processor  2     2    8    on") {
		t.Fatalf("/admin/stages:\n%s", body)
	}
	resp, err := http.PostForm("http://"+admin+"/admin/stages/processor", url.Values{"size": {"6"}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "processor  6     2    8    off") {
		t.Errorf("setting the size: %d\n%s", resp.StatusCode, body)
	}
	resp, err = http.Get("http://" + admin + "/admin/control")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "queue-wait target 250ms") {
		t.Errorf("/admin/control:\n%s", body)
	}
}
