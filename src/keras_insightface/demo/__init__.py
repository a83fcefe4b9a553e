"""demo of keras_insightface: generators of demo and fixture data (synthetic faces, an IJB-format fixture); not imported by the core."""
