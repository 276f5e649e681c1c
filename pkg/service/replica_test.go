package service_test

import (
	"strings"
	"testing"

	"github.com/caravan-cd/caravan/pkg/service"
)

// The replica ID: CARAVAN_REPLICA_ID, else POD_NAME, else one generated ID
// per process.
func TestReplicaID(t *testing.T) {
	t.Setenv(service.PodNameVar, "")
	a, b := service.ReplicaID(""), service.ReplicaID("")
	if a == "" || a != b {
		t.Fatalf("generated IDs %q and %q: want one per process", a, b)
	}
	if service.ReplicaID(" pod-1 ") != "pod-1" {
		t.Fatal("a configured ID is not kept")
	}
	t.Setenv(service.PodNameVar, "caravan-discovery-7c9f-x2")
	if got := service.ReplicaID(""); got != "caravan-discovery-7c9f-x2" {
		t.Fatalf("pod name ignored: %q", got)
	}
	if got := service.ReplicaID("explicit"); got != "explicit" {
		t.Fatalf("CARAVAN_REPLICA_ID does not win over the pod name: %q", got)
	}
}

// The variables the replica ID replaced are refused, not ignored.
func TestRetiredVariables(t *testing.T) {
	if err := service.Retired(); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CARAVAN_PROMOTER_ID", "p-0")
	err := service.Retired()
	if err == nil || !strings.Contains(err.Error(), "CARAVAN_PROMOTER_ID") || !strings.Contains(err.Error(), "CARAVAN_REPLICA_ID") {
		t.Fatalf("err = %v", err)
	}
}
