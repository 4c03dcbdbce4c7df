package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A misspelled key in a sweep spec or a mix file used to run with the
// default, exit 0; it must fail and name the key.
func TestSpecAndMixRejectMisspelledKeys(t *testing.T) {
	if _, err := ParseSpec([]byte("name: x\ndurration: 1s\n")); err == nil || !strings.Contains(err.Error(), `unknown key "durration"`) {
		t.Errorf("spec: %v", err)
	}
	if _, err := ParseSpec([]byte("matrix: {reader: [1, 2]}\n")); err == nil || !strings.Contains(err.Error(), `unknown key "reader"`) {
		t.Errorf("spec matrix: %v", err)
	}
	path := filepath.Join(t.TempDir(), "mix.yaml")
	os.WriteFile(path, []byte("- {path: /echo, method: POST, body_sise: 10}\n"), 0o644)
	f := loadFlags{mixFile: path}
	if err := f.finish("http://127.0.0.1:1/"); err == nil || !strings.Contains(err.Error(), `unknown key "body_sise"`) {
		t.Errorf("mix: %v", err)
	}
}
