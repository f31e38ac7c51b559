// Azure Cache for Redis: real-time per-tenant metrics, Redis Streams destination, idempotency
// keys, rate-limit buckets, last-known status per entity. TLS only (port 6380, TLS 1.2).
// Auth: the app's redis-py client uses the access key (REDIS_PASSWORD, a Key Vault reference);
// Entra ID auth is switched on too and the app identity gets the "Data Contributor" access
// policy, so moving the client to token auth needs no infra change.
// Encryption at rest: the service encrypts persisted data and (Premium) data disks with
// Microsoft-managed keys; customer-managed keys exist only on Enterprise / Azure Managed Redis.
// NB: Basic/Standard/Premium run Redis 6.0 (XADD ... MINID needs 6.2) and retire on 2028-09-30;
// Azure Managed Redis is the successor.
param location string
param tags object
param name string
@allowed(['Basic', 'Standard', 'Premium'])
param skuName string
@allowed(['C', 'P'])
param family string
param capacity int
param entraAuth bool
@allowed(['Enabled', 'Disabled'])
param publicNetworkAccess string
param workspaceId string

resource cache 'Microsoft.Cache/redis@2024-11-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    // checkov:skip=CKV_AZURE_89: public network access is the publicNetworkAccess parameter; prod.parameters.json sets Disabled with a private endpoint. TLS 1.2 only, non-TLS port closed.
    sku: { name: skuName, family: family, capacity: capacity }
    redisVersion: 'latest'
    enableNonSslPort: false
    minimumTlsVersion: '1.2'
    publicNetworkAccess: publicNetworkAccess
    // Keys stay available for the current client (REDIS_PASSWORD); see the header.
    disableAccessKeyAuthentication: false
    redisConfiguration: entraAuth ? {
      'aad-enabled': 'true'
      // Streams and metrics must never be evicted silently.
      'maxmemory-policy': 'noeviction'
    } : {
      'maxmemory-policy': 'noeviction'
    }
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: cache
  properties: {
    workspaceId: workspaceId
    logs: [{ categoryGroup: 'allLogs', enabled: true }]
    metrics: [{ category: 'AllMetrics', enabled: true }]
  }
}

output id string = cache.id
output name string = cache.name
output hostName string = cache.properties.hostName
