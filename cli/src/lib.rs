//! edgectl: command-line client of the master controller REST API.
//!
//! Not built yet: see the open issue for this component. The binary parses its documented flags.
