// Cosmos DB for NoSQL: the platform's GRC data (monitored by the change-feed triggers) and the
// lease container. Keys are disabled: the app and the trigger use Entra ID (the SQL role
// assignment is in roles.bicep).
// Encryption at rest: always on (AES-256, Microsoft-managed keys); a customer-managed key from
// Key Vault when `cmk.enabled` (must be chosen at account creation).
param location string
param tags object
param accountName string
param databaseName string
param containerNames array
param leaseContainerName string
@allowed(['Serverless', 'Provisioned'])
param capacityMode string
param autoscaleMaxThroughput int
@allowed(['Enabled', 'Disabled'])
param publicNetworkAccess string
@description('{ enabled, keyVaultUri, keyName, keyUri, identityId }: keyUri is the versionless key URL built in main.bicep.')
param cmk object
param workspaceId string

var serverless = capacityMode == 'Serverless'

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-05-15' = {
  name: accountName
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  identity: cmk.enabled ? {
    type: 'UserAssigned'
    userAssignedIdentities: { '${cmk.identityId}': {} }
  } : { type: 'None' }
  properties: {
    // checkov:skip=CKV_AZURE_101: public network access is the publicNetworkAccess parameter; prod.parameters.json sets Disabled with a private endpoint. Keys are disabled, so public access still needs an Entra ID identity with a data-plane role.
    // checkov:skip=CKV_AZURE_99: IP/VNet restriction is achieved with private endpoints (usePrivateEndpoints + publicNetworkAccess Disabled in prod), not IP rules; Flex Consumption has no fixed outbound IPs to allow-list.
    databaseAccountOfferType: 'Standard'
    locations: [{ locationName: location, failoverPriority: 0, isZoneRedundant: false }]
    consistencyPolicy: { defaultConsistencyLevel: 'Session' }
    capabilities: serverless ? [{ name: 'EnableServerless' }] : []
    // Entra ID only: no account keys, no key-based metadata writes.
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    publicNetworkAccess: publicNetworkAccess
    networkAclBypass: 'AzureServices'
    keyVaultKeyUri: cmk.enabled ? cmk.keyUri : null
    defaultIdentity: cmk.enabled ? 'UserAssignedIdentity=${cmk.identityId}' : 'FirstPartyIdentity'
    // Point-in-time restore (7 days, no extra charge) on provisioned accounts; serverless keeps
    // periodic backups (every 4 h, 8 h retention, in-region copies).
    backupPolicy: serverless ? {
      type: 'Periodic'
      periodicModeProperties: {
        backupIntervalInMinutes: 240
        backupRetentionIntervalInHours: 8
        backupStorageRedundancy: 'Local'
      }
    } : {
      type: 'Continuous'
      continuousModeProperties: { tier: 'Continuous7Days' }
    }
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-05-15' = {
  parent: account
  name: databaseName
  properties: {
    resource: { id: databaseName }
    options: serverless ? {} : { autoscaleSettings: { maxThroughput: autoscaleMaxThroughput } }
  }
}

// Monitored containers: partitioned by tenant; TTL on with no default expiry (-1) so a
// soft-deleted document can carry its own `ttl` and still be seen by the change feed first.
resource containers 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = [for c in containerNames: {
  parent: database
  name: c
  properties: {
    resource: {
      id: c
      partitionKey: { paths: ['/tenantId'], kind: 'Hash', version: 2 }
      defaultTtl: -1
      indexingPolicy: {
        indexingMode: 'consistent'
        includedPaths: [{ path: '/*' }]
        excludedPaths: [{ path: '/"_etag"/?' }]
      }
    }
  }
}]

resource leaseContainer 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = {
  parent: database
  name: leaseContainerName
  properties: {
    resource: {
      id: leaseContainerName
      partitionKey: { paths: ['/id'], kind: 'Hash', version: 2 }
    }
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: account
  properties: {
    workspaceId: workspaceId
    logAnalyticsDestinationType: 'Dedicated'
    logs: [{ categoryGroup: 'allLogs', enabled: true }]
    metrics: [{ category: 'Requests', enabled: true }]
  }
}

output id string = account.id
output name string = account.name
output endpoint string = account.properties.documentEndpoint
