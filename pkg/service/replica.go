package service

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
)

// PodNameVar is the variable a replica takes its ID from when
// CARAVAN_REPLICA_ID is unset: the Helm chart sets it to the pod's name
// through the downward API.
const PodNameVar = "POD_NAME"

// generated is this process's ID when neither CARAVAN_REPLICA_ID nor
// POD_NAME is set: one per process, whichever service asks.
var generated = sync.OnceValue(func() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "replica"
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return host + "-" + hex.EncodeToString(b)
})

// ReplicaID is this process's replica ID: configured (CARAVAN_REPLICA_ID)
// when set, else $POD_NAME, else the host name and a random suffix, the
// same for every service of the process. Leases are held per replica ID;
// lease.Claim refuses a second live process with the same one.
func ReplicaID(configured string) string {
	if id := strings.TrimSpace(configured); id != "" {
		return id
	}
	if pod := strings.TrimSpace(os.Getenv(PodNameVar)); pod != "" {
		return pod
	}
	return generated()
}

// retired are variables earlier versions read, and what replaced them.
var retired = map[string]string{
	"CARAVAN_DISCOVERY_REPLICA_ID": "CARAVAN_REPLICA_ID",
	"CARAVAN_PROMOTER_ID":          "CARAVAN_REPLICA_ID",
	"CARAVAN_VERIFIER_ID":          "CARAVAN_REPLICA_ID",
}

// Retired refuses variables that are no longer read, naming what replaced
// them, rather than ignoring them.
func Retired() error {
	var errs []error
	for _, name := range []string{"CARAVAN_DISCOVERY_REPLICA_ID", "CARAVAN_PROMOTER_ID", "CARAVAN_VERIFIER_ID"} {
		if _, ok := os.LookupEnv(name); ok {
			errs = append(errs, fmt.Errorf("%s: no longer read; set %s (or %s) instead", name, retired[name], PodNameVar))
		}
	}
	return errors.Join(errs...)
}
