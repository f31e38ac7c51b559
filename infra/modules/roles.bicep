// Least-privilege data-plane access for the Function App's managed identity. No account keys,
// connection strings or SAS are handed out; each grant is scoped to the one resource that needs it.
param principalId string
param storageAccountName string
param deploymentContainerName string
param cosmosAccountName string
param eventHubsNamespaceName string
param keyVaultName string
param appInsightsName string
param redisName string
param redisEntraAuth bool
@description('True when Key Vault holds the Event Hubs connection string (SAS enabled).')
param eventHubsConnectionSecret bool

// Built-in role definition ids (stable across tenants).
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  eventHubsDataSender: '2b629674-e913-4c01-ae53-ef4638d8f975'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}
// Cosmos DB data-plane role "Cosmos DB Built-in Data Contributor".
var cosmosDataContributor = '00000000-0000-0000-0000-000000000002'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource cosmos 'Microsoft.DocumentDB/databaseAccounts@2024-05-15' existing = {
  name: cosmosAccountName
}

resource eventHubs 'Microsoft.EventHub/namespaces@2024-01-01' existing = {
  name: eventHubsNamespaceName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

// Exists only with Redis key auth (keyvault.bicep creates it under the same condition): an
// unconditional reference would make the role assignment below fail with NotFound.
resource redisPasswordSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = if (!redisEntraAuth) {
  parent: vault
  name: 'redis-password'
}

resource pageTokenKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: 'page-token-key'
}

resource eventHubsConnectionSecretRes 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = if (eventHubsConnectionSecret) {
  parent: vault
  name: 'eventhubs-connection-string'
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource redis 'Microsoft.Cache/redisEnterprise@2025-07-01' existing = {
  name: redisName
}

resource redisDatabase 'Microsoft.Cache/redisEnterprise/databases@2025-07-01' existing = {
  parent: redis
  name: 'default'
}

// Host storage (AzureWebJobsStorage__accountName) creates its own containers (locks, keys) and
// reads the deployment package in `deploymentContainerName`: Blob Data Owner on the account is
// what the Functions host documents for identity-based host storage.
resource blobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Functions host storage and deployment container ${deploymentContainerName}'
  }
}

// Retry, vector and backfill queues (send, receive, delete) and the queue triggers.
resource queueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Retry / vector queues'
  }
}

// Stream configs, analytics, dead letters, audit, backfills tables (idempotency claims are in Redis).
resource tableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, roles.storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Stream config, analytics, dead-letter, audit tables'
  }
}

// Produce only (Kafka OAUTHBEARER or AMQP); consumers are other teams' identities.
resource eventHubsSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(eventHubs.id, principalId, roles.eventHubsDataSender)
  scope: eventHubs
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventHubsDataSender)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Kafka / AMQP producer'
  }
}

// Read the one secret the app settings reference, not the whole vault (none with Entra ID auth).
resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!redisEntraAuth) {
  name: guid(redisPasswordSecret.id, principalId, roles.keyVaultSecretsUser)
  scope: redisPasswordSecret
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Key Vault reference REDIS_PASSWORD'
  }
}

resource pageTokenKeyUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(pageTokenKeySecret.id, principalId, roles.keyVaultSecretsUser)
  scope: pageTokenKeySecret
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Key Vault reference PAGE_TOKEN_KEY'
  }
}

resource eventHubsSecretUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (eventHubsConnectionSecret) {
  name: guid(vault.id, 'eventhubs-connection-string', principalId, roles.keyVaultSecretsUser)
  scope: eventHubsConnectionSecretRes
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Key Vault reference EVENTHUBS_CONNECTION_STRING'
  }
}

// Entra ID ingestion of telemetry (APPLICATIONINSIGHTS_AUTHENTICATION_STRING).
resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, principalId, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Application Insights ingestion with Entra ID'
  }
}

// Cosmos DB data plane: read the monitored containers, read/write the lease container.
resource cosmosData 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = {
  parent: cosmos
  name: guid(cosmos.id, principalId, cosmosDataContributor)
  properties: {
    roleDefinitionId: '${cosmos.id}/sqlRoleDefinitions/${cosmosDataContributor}'
    principalId: principalId
    scope: cosmos.id
  }
}

// Redis data access by Entra ID token (REDIS_AUTH=entra):
// Azure Managed Redis has one built-in access policy, "default" (full data access to the database).
resource redisAccess 'Microsoft.Cache/redisEnterprise/databases/accessPolicyAssignments@2025-07-01' = if (redisEntraAuth) {
  parent: redisDatabase
  name: 'functionapp'
  properties: {
    accessPolicyName: 'default'
    user: { objectId: principalId }
  }
}
