package bench

import (
	"bytes"
	"strings"
	"testing"
)

// cliCase is one run of a bench command: it fails with an error saying
// wantErr, or succeeds and its standard output passes check.
type cliCase struct {
	name    string
	args    []string
	wantErr string
	check   func(t *testing.T, stdout string)
}

// runCLICases runs each case as a subtest.
func runCLICases(t *testing.T, cases []cliCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := Main(t.Context(), tt.args, Env{Stdout: &out, Stderr: &errb})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, errb.String())
			}
			tt.check(t, out.String())
		})
	}
}
