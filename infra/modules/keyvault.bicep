// Key Vault (RBAC mode, soft delete + purge protection) for the secrets the app settings
// reference with @Microsoft.KeyVault(SecretUri=...): the Redis access key (only when Redis uses keys)
// the Event Hubs connection string (only when SAS is enabled) and the HMAC key of continuation tokens;
// everything else uses the managed identity.
// Encryption at rest: secrets are encrypted by Key Vault with HSM-protected, Microsoft-managed
// keys (FIPS 140 validated); there is no customer-managed-key option for the vault itself.
param location string
param tags object
param name string
param redisName string
@description('Store the Redis access key (REDIS_AUTH=key); false when the app uses Entra ID.')
param redisKeyAuth bool
param eventHubsNamespaceName string
@description('Send-only SAS rule of the namespace; empty = Entra ID only, no secret.')
param eventHubsSendRuleName string
@description('HMAC key of the API\'s continuation tokens (PAGE_TOKEN_KEY).')
@secure()
param pageTokenKey string
@allowed(['Enabled', 'Disabled'])
param publicNetworkAccess string
param workspaceId string

// Azure Managed Redis: the access key belongs to the cluster's database `default`.
resource redis 'Microsoft.Cache/redisEnterprise@2025-07-01' existing = {
  name: redisName
}

resource redisDatabase 'Microsoft.Cache/redisEnterprise/databases@2025-07-01' existing = {
  parent: redis
  name: 'default'
}

resource eventHubsSendRule 'Microsoft.EventHub/namespaces/authorizationRules@2024-01-01' existing = if (!empty(eventHubsSendRuleName)) {
  name: '${eventHubsNamespaceName}/${eventHubsSendRuleName}'
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    // checkov:skip=CKV_AZURE_109: the firewall default action follows publicNetworkAccess (Deny when Disabled with private endpoints in prod); dev allows public access with RBAC-only authorisation.
    // checkov:skip=CKV_AZURE_189: public network access is the publicNetworkAccess parameter; prod.parameters.json sets Disabled with a private endpoint.
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: publicNetworkAccess == 'Enabled' ? 'Allow' : 'Deny'
    }
  }
}

resource redisPassword 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (redisKeyAuth) {
  parent: vault
  name: 'redis-password'
  properties: {
    // checkov:skip=CKV_AZURE_114: false positive, contentType is set below; checkov does not see the properties of a conditional (if) resource.
    // checkov:skip=CKV_AZURE_41: the value is the Redis database's own access key; it is rotated by regenerating the key and redeploying, and an expiry here would break the app-setting reference without rotating anything.
    contentType: 'text/plain; redis-access-key'
    value: redisDatabase.listKeys().primaryKey
  }
}

// Kafka SASL PLAIN password (the namespace connection string), only when SAS is enabled.
resource eventHubsConnection 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(eventHubsSendRuleName)) {
  parent: vault
  name: 'eventhubs-connection-string'
  properties: {
    // checkov:skip=CKV_AZURE_114: false positive, contentType is set below; checkov does not see the properties of a conditional (if) resource.
    // checkov:skip=CKV_AZURE_41: the value is a SAS rule's connection string rotated by regenerating the rule's key and redeploying; an expiry here would break the app-setting reference without rotating anything.
    contentType: 'text/plain; eventhubs-connection-string'
    value: eventHubsSendRule.listKeys().primaryConnectionString
  }
}

// Continuation tokens of paged reads are signed with this key on every instance (shared/pagetokens.py).
resource pageTokenKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'page-token-key'
  properties: {
    // checkov:skip=CKV_AZURE_41: rotated by deploying a new pageTokenKey; an expiry here would break the app-setting reference without rotating anything.
    contentType: 'text/plain; hmac-key'
    value: pageTokenKey
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: vault
  properties: {
    workspaceId: workspaceId
    logs: [{ categoryGroup: 'audit', enabled: true }]
    metrics: [{ category: 'AllMetrics', enabled: true }]
  }
}

output id string = vault.id
output name string = vault.name
// Versionless URI: the reference follows key rotation.
output redisPasswordSecretUri string = redisKeyAuth ? '${vault.properties.vaultUri}secrets/redis-password' : ''
output pageTokenKeySecretUri string = '${vault.properties.vaultUri}secrets/page-token-key'
output eventHubsConnectionSecretUri string = empty(eventHubsSendRuleName) ? '' : '${vault.properties.vaultUri}secrets/eventhubs-connection-string'
