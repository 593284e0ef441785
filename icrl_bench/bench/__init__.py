"""The benchmark half: protocols (what is measured), the harness (how: env rows, sharding), metrics
(rliable's aggregates), results (one JSON schema, upgrade, export), reporting, the leaderboard
(and its page), and `reproduce` (the paper's table, rebuilt)."""
