"""demo of keras_insightface: generators of demo and fixture data (synthetic faces, an IJB-format fixture);
imported by the CLI and the tests, never by the core."""
