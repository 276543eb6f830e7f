"""Running the fleet: the local stack and its supervisor, the demo, and deployment with Ansible."""
