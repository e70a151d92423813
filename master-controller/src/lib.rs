//! Master controller: the global REST API for operators and developers.
//!
//! Not built yet: see the open issue for this component. The binary parses its documented flags.
