"""Operations, one module per noun. Importing `natsop.registry.operations()` loads them all.

Each module defines parameter and result models and async functions registered with
`@operation`. Modules here never import the MCP SDK, the CLI or the renderer.
"""
