// Package testenv starts the real servers Caravan's tests run against: an
// in-process nats-server with JetStream (NATS) or a JetStream cluster
// (Cluster), a git smart-HTTP server backed by the git CLI (GitServer), an
// in-memory OCI registry (Registry), a Kubernetes API server
// (KubeAPIServer) and a Gitea server (GiteaServer).
//
// Every helper takes a testing.TB, fails the test on error, stops what it
// started in t.Cleanup and writes nothing to the test log. None of them is
// a fake: tests exercise the same protocols as production.
package testenv
