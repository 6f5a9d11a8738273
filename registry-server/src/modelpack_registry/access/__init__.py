"""Who may do what: htpasswd users, API tokens, model owners and reserved names, and the
policy that checks them for every request and upload."""
