package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestExecute(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{name: "version", args: []string{"version"}, wantOut: "caravan "},
		{name: "unknown flag", args: []string{"version", "--nope"}, wantCode: 2, wantErr: "unknown flag"},
		{name: "unknown verb", args: []string{"frobnicate"}, wantCode: 1, wantErr: "unknown command"},
		{name: "bad config names the variable", args: []string{"server"}, env: map[string]string{"CARAVAN_LOG_LEVEL": "loud", "CARAVAN_DATA_DIR": "x"}, wantCode: 2, wantErr: "CARAVAN_LOG_LEVEL"},
		{name: "unparsable config", args: []string{"server"}, env: map[string]string{"CARAVAN_JS_REPLICAS": "three"}, wantCode: 2, wantErr: "JS_REPLICAS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var out, errOut bytes.Buffer
			code := Execute(context.Background(), tt.args, &out, &errOut)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tt.wantCode, errOut.String())
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("stdout %q, want %q", out.String(), tt.wantOut)
			}
			if !strings.Contains(errOut.String(), tt.wantErr) {
				t.Errorf("stderr %q, want %q", errOut.String(), tt.wantErr)
			}
		})
	}
}
