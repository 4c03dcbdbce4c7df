package strictyaml

import (
	"strings"
	"testing"
	"time"
)

type spec struct {
	Name     string        `yaml:"name"`
	Duration time.Duration `yaml:"duration"`
	Repeats  int           `yaml:"repeats"`
	Matrix   struct {
		Readers []int `yaml:"readers"`
	} `yaml:"matrix"`
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       string // substring of the error; "" for success
	}{
		{"ok", "name: x\nduration: 2s\nrepeats: 3\nmatrix: {readers: [1, 2]}\n", ""},
		{"empty", "", ""},
		{"comment only", "# nothing\n", ""},
		{"misspelled key", "name: x\ndurration: 1s\n", `line 2: unknown key "durration"`},
		{"nested unknown key", "matrix: {readerz: [1]}\n", `unknown key "readerz"`},
		{"duplicate key", "repeats: 1\nrepeats: 2\n", `"repeats" already defined`},
		{"wrong type", "repeats: many\n", `line 1: "many" is not a whole number`},
		{"bad duration", "duration: forever\n", "forever"},
		{"two documents", "name: a\n---\nname: b\n", "more than one YAML document"},
		{"not yaml", "matrix: [", "yaml:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s spec
			err := Decode([]byte(tt.yaml), &s)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Decode: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Decode: %v, want an error with %q", err, tt.want)
			}
		})
	}
	var s spec
	if err := Decode([]byte("duration: 1.5s\nmatrix: {readers: [4]}"), &s); err != nil || s.Duration != 1500*time.Millisecond || s.Matrix.Readers[0] != 4 {
		t.Fatalf("%v %+v", err, s)
	}
}
