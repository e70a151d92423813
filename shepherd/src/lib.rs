//! Shepherd: metrics and health checks of one cloudlet, shipped to InfluxDB.
//!
//! Not built yet: see the open issue for this component. The binary parses its documented flags.
