// Function App on Flex Consumption (Linux, Python 3.11) with a system-assigned managed identity.
// The deployment package lives in a blob container that the host reads with that identity.
// Encryption at rest: app settings and the deployment package are encrypted by the platform
// (App Service settings store, Storage SSE / CMK per storage.bicep); TLS 1.2+ on every endpoint.
param location string
param tags object
param name string
param planName string
param storageAccountName string
param deploymentContainerName string
param instanceMemoryMB int
param maximumInstanceCount int
@description('Always-ready instances for the HTTP trigger group (0 = scale from zero).')
param alwaysReadyHttpInstances int = 0
@description('Spread the Flex Consumption plan over availability zones (region must support it).')
param zoneRedundant bool = false
@description('All app settings (built in main.bicep).')
param appSettings object
@allowed(['Enabled', 'Disabled'])
param publicNetworkAccess string
@description('Subnet (delegated to Microsoft.App/environments) for VNet integration; empty = none.')
param virtualNetworkSubnetId string = ''
param workspaceId string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { tier: 'FlexConsumption', name: 'FC1' }
  properties: {
    // checkov:skip=CKV_AZURE_225: zone redundancy is the zoneRedundant parameter (prod.parameters.json sets it); dev stays single-zone where Flex zone support is regional.
    reserved: true
    zoneRedundant: zoneRedundant
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  // checkov:skip=CKV_AZURE_17: client certificates are not how callers authenticate here; function keys plus a validated Entra ID token (issue 6) are enforced on every route but /health and /openapi.json.
  // checkov:skip=CKV_AZURE_222: public network access is the publicNetworkAccess parameter; the HTTP API is called by the platform's apps with a function key plus an Entra ID token, and prod can switch to private endpoints (usePrivateEndpoints).
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales out per trigger group on demand; a warm minimum is the alwaysReadyHttpInstances parameter (prod sets 1), not siteConfig instance counts.
  location: location
  // checkov:skip=CKV_AZURE_213: Flex Consumption has no App Service health-check feature; GET /health (anonymous, per-dependency status) is the probe for availability tests.
  // azd finds the service to deploy by this tag.
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: { type: 'SystemAssigned' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: publicNetworkAccess
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: { type: 'SystemAssignedIdentity' }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
        alwaysReady: alwaysReadyHttpInstances > 0 ? [{ name: 'http', instanceCount: alwaysReadyHttpInstances }] : []
      }
      runtime: { name: 'python', version: '3.11' }
    }
  }
}

// checkov treats every sites/config resource as the `web` site config; this one holds app settings
// only, so the site-config checks below are false positives here.
resource settings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13: false positive on the appsettings resource; caller authentication is function keys + Entra ID token validation in the app (see the CKV_AZURE_17 note on the site).
  // checkov:skip=CKV_AZURE_63: false positive on the appsettings resource; Flex Consumption (Linux) has no App Service HTTP logs; requests are logged by FunctionAppLogs and Application Insights.
  // checkov:skip=CKV_AZURE_65: false positive on the appsettings resource; detailed error pages are an IIS (Windows) feature, not applicable to Linux Flex Consumption.
  parent: site
  // checkov:skip=CKV_AZURE_66: false positive on the appsettings resource; failed request tracing is an IIS (Windows) feature, not applicable to Linux Flex Consumption.
  // checkov:skip=CKV_AZURE_80: false positive; the app is Python 3.11, no .NET Framework.
  // checkov:skip=CKV_AZURE_88: false positive; Flex Consumption keeps app content in the blob deployment container, not Azure Files.
  name: 'appsettings'
  // checkov:skip=CKV_AZURE_222: false positive on the appsettings resource; public network access is set on the site (publicNetworkAccess parameter).
  properties: appSettings
}

// No FTP / basic-auth publishing: deployments go through Entra ID (azd, OneDeploy).
resource ftpPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: { allow: false }
}

resource scmPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: { allow: false }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: site
  properties: {
    workspaceId: workspaceId
    logs: [{ category: 'FunctionAppLogs', enabled: true }]
    metrics: [{ category: 'AllMetrics', enabled: true }]
  }
}

output id string = site.id
output name string = site.name
output principalId string = site.identity.principalId
output defaultHostName string = site.properties.defaultHostName
