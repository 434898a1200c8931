package authn

import "slices"

// Policy says who may use a route. The zero Policy admits any authenticated
// principal. A Policy is a plain value, safe for concurrent use as long as
// its slices are not modified.
type Policy struct {
	// Public routes need no credentials; Authorize admits even a nil
	// principal and Middleware does not authenticate at all.
	Public bool
	// Roles, when set, admits a principal holding any one of them.
	Roles []string
	// Permissions, when set, admits a principal holding all of them.
	Permissions []string
	// Tenants, when set, admits a principal whose Tenant is one of them.
	Tenants []string
}

// Authorize returns nil when pr may use a route guarded by p. Otherwise it
// returns an *Error: Status 401 Reason "missing" for a nil principal, or
// Status 403 with Reason "forbidden_role", "forbidden_permission" or
// "forbidden_tenant", checked in that order.
func (p Policy) Authorize(pr *Principal) error {
	if p.Public {
		return nil
	}
	if pr == nil {
		return unauthorized(ReasonMissing, nil)
	}
	if len(p.Roles) > 0 && !pr.HasAnyRole(p.Roles...) {
		return forbidden(ReasonForbiddenRole)
	}
	if !pr.HasAllPermissions(p.Permissions...) {
		return forbidden(ReasonForbiddenPermission)
	}
	if len(p.Tenants) > 0 && !slices.Contains(p.Tenants, pr.Tenant) {
		return forbidden(ReasonForbiddenTenant)
	}
	return nil
}
