// Event Hubs namespace with the Kafka endpoint: one event hub per topic, consumer groups on each.
// The app produces over Kafka (SASL_SSL + OAUTHBEARER with its managed identity) or AMQP, both
// authorised by the "Azure Event Hubs Data Sender" role (roles.bicep).
// Encryption at rest: Microsoft-managed keys (AES-256). Customer-managed keys need the Premium or
// Dedicated tier; set skuName Premium and add `encryption` if your policy requires CMK here.
param location string
param tags object
param namespaceName string
@allowed(['Standard', 'Premium'])
param skuName string
param capacity int
@description('True = Entra ID only (OAUTHBEARER). False keeps SAS keys for SASL PLAIN with a connection string.')
param disableLocalAuth bool
@description('[{ name, partitionCount, retentionHours }]')
param eventHubs array
param consumerGroups array
@allowed(['Enabled', 'Disabled'])
param publicNetworkAccess string
param workspaceId string

resource namespace 'Microsoft.EventHub/namespaces@2024-01-01' = {
  name: namespaceName
  location: location
  tags: tags
  sku: { name: skuName, tier: skuName, capacity: capacity }
  properties: {
    kafkaEnabled: true
    minimumTlsVersion: '1.2'
    disableLocalAuth: disableLocalAuth
    publicNetworkAccess: publicNetworkAccess
    isAutoInflateEnabled: skuName == 'Standard'
    maximumThroughputUnits: skuName == 'Standard' ? max(capacity * 2, 4) : 0
    zoneRedundant: true
  }
}

// Only when SAS is allowed: a send-only rule whose connection string Key Vault keeps for Kafka
// SASL PLAIN (username $ConnectionString). With disableLocalAuth the app uses OAUTHBEARER instead.
resource sendRule 'Microsoft.EventHub/namespaces/authorizationRules@2024-01-01' = if (!disableLocalAuth) {
  parent: namespace
  name: 'app-send'
  properties: { rights: ['Send'] }
}

resource hubs 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = [for hub in eventHubs: {
  parent: namespace
  name: hub.name
  properties: {
    partitionCount: hub.partitionCount
    retentionDescription: {
      cleanupPolicy: 'Delete'
      retentionTimeInHours: hub.retentionHours
    }
  }
}]

// One consumer-group resource per (hub, group) pair: index i -> hub i / n, group i % n.
var groupCount = length(consumerGroups)

resource groups 'Microsoft.EventHub/namespaces/eventhubs/consumergroups@2024-01-01' = [for i in range(0, length(eventHubs) * groupCount): {
  name: '${namespace.name}/${eventHubs[i / groupCount].name}/${consumerGroups[i % groupCount]}'
  properties: {}
  dependsOn: [hubs]
}]

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: namespace
  properties: {
    workspaceId: workspaceId
    logAnalyticsDestinationType: 'Dedicated'
    logs: [{ categoryGroup: 'allLogs', enabled: true }]
    metrics: [{ category: 'AllMetrics', enabled: true }]
  }
}

output id string = namespace.id
output name string = namespace.name
output sendRuleName string = disableLocalAuth ? '' : sendRule.name
