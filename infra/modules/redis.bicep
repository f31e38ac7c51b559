// Azure Managed Redis (Microsoft.Cache/redisEnterprise, Redis 7.4): real-time per-tenant metrics,
// the Redis Streams destination, idempotency keys, rate-limit buckets, change-feed state.
// Why not classic Azure Cache for Redis (Microsoft.Cache/redis): its Basic/Standard/Premium tiers
// run Redis 6.0, and the streams destination trims with `XADD ... MINID ~ <id>` (Redis >= 6.2);
// that product also retires on 2028-09-30. Azure Managed Redis is its successor.
//
// One cluster with its single database `default` (the only name the service accepts):
// - clusteringPolicy EnterpriseCluster: one endpoint, the proxy routes every command, so the app's
//   plain redis-py `Redis` client (not `RedisCluster`) works unchanged. Each tenant's keys carry a
//   hash tag (`grc:{tenant}:...`) and every Lua script touches one tenant's keys only, so the
//   scripts stay single-slot and would also be valid under OSSCluster; OSSCluster would need a
//   cluster-aware client (MOVED redirects, per-shard connections). The policy is fixed at create.
// - TLS only (clientProtocol Encrypted, minimum TLS 1.2), port 10000.
// - evictionPolicy NoEviction: streams and metrics must never be evicted silently.
// Auth: with redisEntraAuth (main.bicep, the default) the app signs in with its managed identity's
// Entra ID token (REDIS_AUTH=entra: redis-entraid renews it and re-authenticates open connections),
// holds the database's "default" access policy (roles.bicep), and access keys are disabled. With
// redisEntraAuth false the app uses the access key (REDIS_AUTH=key, a Key Vault reference).
// Encryption at rest: data and persistence files are encrypted with Microsoft-managed keys, or a
// customer-managed key (cmk.enabled + a versioned key URL) through a user-assigned identity.
param location string
param tags object
param name string
@description('Azure Managed Redis SKU: Balanced_B0/B1 for dev, Balanced_B5+ or MemoryOptimized/ComputeOptimized for prod.')
@allowed(['Balanced_B0', 'Balanced_B1', 'Balanced_B3', 'Balanced_B5', 'Balanced_B10', 'Balanced_B20', 'Balanced_B50', 'MemoryOptimized_M10', 'MemoryOptimized_M20', 'MemoryOptimized_M50', 'ComputeOptimized_X3', 'ComputeOptimized_X5', 'ComputeOptimized_X10'])
param skuName string
@description('Replicate the data set (SLA); Disabled halves the cost and is for dev only.')
param highAvailability bool
@allowed(['Enabled', 'Disabled'])
param publicNetworkAccess string
@description('Customer-managed key: {enabled, identityId, keyUrl}; keyUrl is a versioned key URL (the service accepts no versionless one).')
param cmk object
param workspaceId string
@description('Allow access-key authentication (false when the app uses Entra ID tokens).')
param accessKeysEnabled bool

resource cluster 'Microsoft.Cache/redisEnterprise@2025-07-01' = {
  name: name
  location: location
  tags: tags
  sku: { name: skuName }
  identity: cmk.enabled ? {
    type: 'UserAssigned'
    userAssignedIdentities: { '${cmk.identityId}': {} }
  } : null
  properties: {
    minimumTlsVersion: '1.2'
    highAvailability: highAvailability ? 'Enabled' : 'Disabled'
    // Required from API 2025-07-01 on; prod.parameters.json sets Disabled with a private endpoint.
    publicNetworkAccess: publicNetworkAccess
    // An empty customerManagedKeyEncryption means Microsoft-managed keys.
    encryption: {
      customerManagedKeyEncryption: cmk.enabled ? {
        keyEncryptionKeyIdentity: {
          identityType: 'userAssignedIdentity'
          userAssignedIdentityResourceId: cmk.identityId
        }
        keyEncryptionKeyUrl: cmk.keyUrl
      } : {}
    }
  }
}

resource database 'Microsoft.Cache/redisEnterprise/databases@2025-07-01' = {
  parent: cluster
  name: 'default'
  properties: {
    clientProtocol: 'Encrypted'
    port: 10000
    clusteringPolicy: 'EnterpriseCluster'
    evictionPolicy: 'NoEviction'
    // Keys only when the app is configured for them (REDIS_AUTH=key); the API default is Disabled.
    accessKeysAuthentication: accessKeysEnabled ? 'Enabled' : 'Disabled'
  }
}

// Metrics (server load, memory, operations) are emitted by the cluster; connection logs
// (new connection / authentication / disconnection) by the database.
resource clusterDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: cluster
  properties: {
    workspaceId: workspaceId
    metrics: [{ category: 'AllMetrics', enabled: true }]
  }
}

resource databaseDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: database
  properties: {
    workspaceId: workspaceId
    logs: [{ category: 'ConnectionEvents', enabled: true }]
  }
}

output id string = cluster.id
output name string = cluster.name
output databaseName string = database.name
output hostName string = cluster.properties.hostName
output port int = database.properties.port
