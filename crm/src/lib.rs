//! Cloudlet Resource Manager: the agent that provisions clusters and apps on one cloudlet.
//!
//! Not built yet: see the open issue for this component. The binary parses its documented flags.
