"""HTTP routers: jobs, catalogs, health and metrics, and the drivers' internal event endpoint."""
