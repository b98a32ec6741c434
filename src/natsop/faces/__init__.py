"""What people and assistants touch: the CLI, the MCP server and its transports, rendering, skill
installation. Generated from the registry; no operation is defined here."""
