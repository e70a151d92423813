//! Regional controller (being built).
