// Storage account: Functions host storage (identity-based), the Flex deployment container,
// analytics / stream-config / dead-letter / audit tables and the retry / vector queues.
// Encryption at rest: AES-256 with Microsoft-managed keys by default, infrastructure (double)
// encryption on, and a customer-managed key from Key Vault when `cmk.enabled`.
param location string
param tags object
param name string
param skuName string
param deploymentContainerName string
param tables array
param queues array
@allowed(['Enabled', 'Disabled'])
param publicNetworkAccess string
@description('{ enabled, keyVaultUri, keyName, identityId }')
param cmk object
param workspaceId string

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: skuName }
  identity: cmk.enabled ? {
    type: 'UserAssigned'
    userAssignedIdentities: { '${cmk.identityId}': {} }
  } : null
  properties: {
    // checkov:skip=CKV_AZURE_35: default network action follows the publicNetworkAccess parameter (Deny when Disabled with private endpoints in prod); dev keeps Allow with keys disabled and Entra ID only.
    // checkov:skip=CKV_AZURE_59: public network access is the publicNetworkAccess parameter; prod.parameters.json sets Disabled with private endpoints. Blob public (anonymous) access is always off.
    // checkov:skip=CKV_AZURE_206: redundancy is the storageSku parameter; dev uses LRS for cost, prod.parameters.json uses ZRS.
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    // Flex Consumption and the app both use Entra ID (AzureWebJobsStorage__accountName,
    // STORAGE_ACCOUNT_NAME), so account keys and SAS are switched off.
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: publicNetworkAccess == 'Enabled' ? 'Allow' : 'Deny'
    }
    encryption: {
      keySource: cmk.enabled ? 'Microsoft.Keyvault' : 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: { enabled: true, keyType: 'Account' }
        file: { enabled: true, keyType: 'Account' }
        table: { enabled: true, keyType: 'Account' }
        queue: { enabled: true, keyType: 'Account' }
      }
      keyvaultproperties: cmk.enabled ? {
        keyvaulturi: cmk.keyVaultUri
        keyname: cmk.keyName
      } : null
      identity: cmk.enabled ? { userAssignedIdentity: cmk.identityId } : null
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: { enabled: true, days: 7 }
    containerDeleteRetentionPolicy: { enabled: true, days: 7 }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: { publicAccess: 'None' }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource queueResources 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for q in queues: {
  parent: queueService
  name: q
}]

// Poison queues of the queue triggers exist up front so alerts and tools can read them.
resource poisonQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for q in queues: {
  parent: queueService
  name: '${q}-poison'
}]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource tableResources 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for t in tables: {
  parent: tableService
  name: t
}]

resource accountDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: account
  properties: {
    workspaceId: workspaceId
    metrics: [{ category: 'Transaction', enabled: true }]
  }
}

resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: blobService
  properties: {
    workspaceId: workspaceId
    logs: [{ categoryGroup: 'allLogs', enabled: true }]
    metrics: [{ category: 'Transaction', enabled: true }]
  }
}

resource queueDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: queueService
  properties: {
    workspaceId: workspaceId
    logs: [{ categoryGroup: 'allLogs', enabled: true }]
    metrics: [{ category: 'Transaction', enabled: true }]
  }
}

resource tableDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: tableService
  properties: {
    workspaceId: workspaceId
    logs: [{ categoryGroup: 'allLogs', enabled: true }]
    metrics: [{ category: 'Transaction', enabled: true }]
  }
}

output id string = account.id
output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
