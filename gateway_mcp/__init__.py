"""MCP gateway: every service's OpenAPI operations as Claude tools, with no domain logic.

- `gateway_mcp.server.build_gateway(settings)` builds the FastMCP server from `openapi/*.json`.
- `gateway_mcp.settings.GatewaySettings` holds its settings (`GATEWAY_` environment prefix).
- `trading mcp` (stdio) and `trading mcp --http` run it; `trading claude-config` prints the
  Claude Desktop entry.

Nothing is imported here, so reading the settings does not import fastmcp.
"""
