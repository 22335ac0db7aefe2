//! anykv ops: the Fly Extensions sidecar (provisioning, SSO, metering,
//! billing) and region scaling. Built by its own issue; empty until then:
//! it declares no modules yet.
