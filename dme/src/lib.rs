//! Distributed Matching Engine: the MobiledgeX-compatible edge discovery API.
//!
//! Not built yet: see the open issue for this component. The binary parses its documented flags.
