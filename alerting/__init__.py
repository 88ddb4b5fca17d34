"""Alert rules, Alertmanager routing and the small tool that adapts the rules to a deployment."""
