package auth

// Actor formats who p is as Kargo's kargo.akuity.io/create-actor
// annotation and event actors write it: "admin" for the system admin,
// "email:<address>" or "subject:<sub>" for an OIDC caller, and, for an API
// token (Kargo's are Kubernetes service account tokens, written
// "kubernetes:<user>"), "token:<project>/<name>".
func Actor(p Principal) string {
	switch {
	case p.Admin:
		return AdminName
	case p.Claims != nil:
		if e, ok := p.Claims["email"].(string); ok && e != "" {
			return "email:" + e
		}
		if s, ok := p.Claims["sub"].(string); ok && s != "" {
			return "subject:" + s
		}
	}
	if p.Name != "" {
		return p.Name
	}
	return "unknown actor"
}
