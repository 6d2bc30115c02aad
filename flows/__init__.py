"""flows: orchestration, design-space exploration, experiment flows, reports and the axlab CLI."""
