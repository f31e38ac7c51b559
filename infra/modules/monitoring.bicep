// Log Analytics workspace + workspace-based Application Insights.
// Encryption at rest: Microsoft-managed keys (AES-256). Customer-managed keys need a dedicated
// Log Analytics cluster (commitment tier >= 100 GB/day), out of scope for this service's volume.
param location string
param tags object
param workspaceName string
param appInsightsName string

@description('Days of retention in the workspace (30 days are included in the per-GB price).')
param retentionInDays int = 30

// The app (shared/telemetry.py) and the Functions host both send with the managed identity's Entra ID
// token (APPLICATIONINSIGHTS_AUTHENTICATION_STRING=Authorization=AAD; the identity holds Monitoring
// Metrics Publisher, roles.bicep), so the instrumentation key in the connection string must not be
// enough to write telemetry.
@description('Disable instrumentation-key (local) authentication: only Entra ID authenticated telemetry is ingested.')
param appInsightsDisableLocalAuth bool = true

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: retentionInDays
    features: { enableLogAccessUsingOnlyResourcePermissions: true }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
    DisableLocalAuth: appInsightsDisableLocalAuth
  }
}

// The workspace audits its own queries (who read what).
resource workspaceDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: workspace
  properties: {
    workspaceId: workspace.id
    logs: [{ categoryGroup: 'audit', enabled: true }]
    metrics: [{ category: 'AllMetrics', enabled: true }]
  }
}

output workspaceId string = workspace.id
output appInsightsId string = appInsights.id
output appInsightsName string = appInsights.name
output appInsightsConnectionString string = appInsights.properties.ConnectionString
