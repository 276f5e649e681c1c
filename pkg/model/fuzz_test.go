package model

import "testing"

// FuzzDecode checks that Decode and Validate never panic.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(project + stage("dev", "{direct: true}")))
	f.Fuzz(func(t *testing.T, data []byte) {
		dec, err := Decode(data)
		if dec == nil {
			t.Fatal("nil result")
		}
		if err == nil {
			_ = Validate(dec.Documents, nil)
		}
	})
}
