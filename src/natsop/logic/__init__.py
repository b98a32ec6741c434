"""Pure rules with no connection: the audit's rules, subject transforms, backup checks, the event
envelope, name and subject validation."""
